//! `zentrale provision routing.toml`: applies a routing model from a file, so setups can live in
//! version control. The file is the declarative whole — objects absent from it are removed —
//! and it is validated exactly like API changes, then written in one audited transaction.
//! The what-if simulator reads the same format (its `[simulation]` table is accepted and ignored).

use crate::error::ApiError;
use crate::ids::TenantId;
use crate::routing::{Change, RoutingModel, apply_change};
use crate::state::AppState;
use crate::store::Store;
use chrono::Utc;

/// Why a provisioning file was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The TOML is malformed or has an unknown/mistyped field.
    #[error("{line}:{column}: {message}")]
    Parse {
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The model is inconsistent (the field is named), or storage failed.
    #[error("{0}")]
    Rejected(#[from] ApiError),
}

impl ProvisionError {
    /// The field at fault for validation errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ProvisionError::Rejected(ApiError::Validation { field, .. }) => Some(field),
            _ => None,
        }
    }
}

/// Parses a provisioning file.
pub fn parse(text: &str) -> Result<RoutingModel, ProvisionError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                (line, column)
            })
            .unwrap_or((0, 0));
        ProvisionError::Parse {
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

/// Parses, validates and applies `text` as the tenant's whole routing model (audited as
/// actor `provision`). Does not publish; use [`AppState::provision`] on a running server.
pub async fn apply(
    store: &Store,
    tenant: TenantId,
    text: &str,
) -> Result<RoutingModel, ProvisionError> {
    let model = parse(text)?;
    let (model, _, _) = apply_change(
        store,
        tenant,
        "provision",
        Utc::now(),
        Change::Replace(Box::new(model)),
    )
    .await?;
    Ok(model)
}

impl AppState {
    /// [`apply`] on a running server: also publishes the new configuration.
    pub async fn provision(
        &self,
        tenant: TenantId,
        text: &str,
    ) -> Result<RoutingModel, ProvisionError> {
        let model = parse(text)?;
        let (model, _) = self
            .change_routing(tenant, "provision", Change::Replace(Box::new(model)))
            .await?;
        Ok(model)
    }
}
