//! The one error type of the HTTP API and the JSON extractor whose rejection is that type.
//!
//! Every failure — a malformed body, a wrong type, an unknown field, a missing right, a
//! database error — leaves the API as the same stable shape
//! `{"error":{"code":"validation","message":"…","field":"…"}}`, so clients can branch on
//! `code` and show `field` next to the input at fault. Internal details (SQL errors) go to the
//! log, never to the client.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request body or a parameter is invalid; `field` names the input at fault.
    #[error("{message}")]
    Validation {
        /// The JSON path or parameter name at fault (empty when the whole body is).
        field: String,
        /// What is wrong, for a human.
        message: String,
    },
    /// No or an invalid/expired credential.
    #[error("authentication required")]
    Unauthenticated,
    /// Authenticated, but the role, scope or release does not allow this.
    #[error("not allowed")]
    Forbidden,
    /// The entity does not exist in the caller's tenant (also used for other tenants' ids, so
    /// their existence is not revealed).
    #[error("not found")]
    NotFound,
    /// The change conflicts with existing data (duplicate name, identity already taken).
    #[error("{message}")]
    Conflict {
        /// The field whose value conflicts.
        field: String,
        /// What conflicts.
        message: String,
    },
    /// Too many failed login attempts for this user from this address.
    #[error("too many attempts, retry in {retry_after_s} s")]
    RateLimited {
        /// Seconds until the next attempt is accepted.
        retry_after_s: i64,
    },
    /// The body exceeds the size limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("expected content-type application/json")]
    UnsupportedMediaType,
    /// A storage failure; the detail is logged, not returned.
    #[error("internal error")]
    Internal(#[source] StoreError),
    /// A part of the system this request needs is not running (e.g. call control on a node
    /// without SIP); retrying later may succeed.
    #[error("temporarily unavailable")]
    Unavailable,
}

impl ApiError {
    /// A validation error on `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
    /// A conflict on `field`.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Internal(_) => "internal",
            Self::Unavailable => "unavailable",
        }
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code: validation, unauthenticated, forbidden, not_found, conflict, rate_limited,
    /// payload_too_large, unsupported_media_type, internal, unavailable.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
        }
        let field = match &self {
            Self::Validation { field, .. } | Self::Conflict { field, .. } => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field,
            },
        };
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after_s } = self
            && let Ok(v) = header::HeaderValue::from_str(&retry_after_s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A storage-layer failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database url (expected sqlite:… or postgres://…): {0}")]
    UnsupportedUrl(String),
    /// A stored value could not be interpreted (corrupt row).
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// Password hashing failed.
    #[error("password hashing: {0}")]
    Hash(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Db(sqlx::Error::Database(db)) = &e
            && db.is_unique_violation()
        {
            return ApiError::conflict("", "already exists");
        }
        ApiError::Internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e).into()
    }
}

/// JSON body extractor: requires `application/json`, respects the body limit, and turns every
/// serde failure into [`ApiError::Validation`] naming the JSON path at fault. Request types
/// use `#[serde(deny_unknown_fields)]`, so an unknown field is an error naming that field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim();
                ct.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::validation("", rej.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document into `T`, naming the path at fault on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner().to_string();
        let mut field = e.path().to_string();
        if field == "." {
            field.clear();
        }
        ApiError::validation(field, inner)
    })?;
    de.end()
        .map_err(|e| ApiError::validation("", e.to_string()))?;
    Ok(value)
}

/// A page of results with the cursor for the next page (`None` on the last page).
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, oldest first (ids are time-ordered).
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// Query parameters of a paginated list.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=200 (default 50).
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The validated (cursor, limit).
    pub fn validate(&self) -> Result<(Option<String>, i64), ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::validation("limit", "must be between 1 and 200"));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(
                uuid::Uuid::parse_str(c)
                    .map_err(|_| ApiError::validation("cursor", "not a cursor from this API"))?
                    .as_hyphenated()
                    .to_string(),
            ),
        };
        Ok((cursor, limit))
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only proves a next page exists.
pub fn page_from<T>(mut rows: Vec<T>, limit: i64, id_of: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(&id_of)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// Query-string extractor whose rejection is [`ApiError`] (field `query`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::validation("query", e.body_text()))
    }
}
