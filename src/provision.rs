//! `zentrale provision`: applies a routing file (the same format the what-if simulator reads)
//! to a tenant in the database, so a contact center's setup can live in version control.
//!
//! It writes through crm-api's provisioning (validated as a whole, one transaction, audit-logged
//! as actor `provision`). It talks to the database, not to a running server: a server started
//! afterwards loads the new model; to change a running server live, use the routing API.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::Config;

/// Arguments of `zentrale provision`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// The routing file (TOML: queues, skills, agents, hours, DIDs…), e.g. examples/helpdesk.toml.
    pub file: PathBuf,
    /// The tenant's short name (slug).
    #[arg(long)]
    pub tenant: String,
    /// Create the tenant when it does not exist yet.
    #[arg(long)]
    pub create_tenant: bool,
    /// zentrale.toml naming the database; without it the default SQLite file in ./data.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Agents' SIP passwords (TOML: `[agents.<id>] password = "…"`, optional `extension`),
    /// stored as digest HA1 after the routing file is applied. Keep this file out of version
    /// control.
    #[arg(long)]
    pub sip_passwords: Option<PathBuf>,
}

/// Applies the file; prints what was applied.
pub fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let passwords = match &args.sip_passwords {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
        let url = config.database_url();
        let store = crm_api::Store::open(&url)
            .await
            .with_context(|| format!("cannot open the database {url}"))?;
        store
            .migrate()
            .await
            .context("cannot migrate the database schema")?;
        let tenant = match store.tenant_by_slug(&args.tenant).await? {
            Some(row) => crm_api::ids::TenantId::parse(&row.id)
                .with_context(|| format!("tenant {} has a malformed id", args.tenant))?,
            None if args.create_tenant => store
                .create_tenant(&args.tenant, &args.tenant, chrono::Utc::now())
                .await
                .with_context(|| format!("cannot create tenant {}", args.tenant))?,
            None => anyhow::bail!(
                "no tenant '{}' in {url} (use --create-tenant to create it)",
                args.tenant
            ),
        };
        let model = crm_api::provision::apply(&store, tenant, &text)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
        let config = model.routing_config();
        println!(
            "provisioned tenant '{}' from {}: {} queues, {} agents, {} skills",
            args.tenant,
            args.file.display(),
            config.queues.len(),
            config.agents.len(),
            config.skills.len()
        );
        if let (Some(text), Some(path)) = (&passwords, &args.sip_passwords) {
            let set =
                crm_api::sip_credentials::apply_password_file(&store, tenant, "provision", text)
                    .await
                    .map_err(|e| match &e {
                        crm_api::ApiError::Validation { field, message } => {
                            anyhow::anyhow!("{}: {field}: {message}", path.display())
                        }
                        _ => anyhow::anyhow!("{}: {e}", path.display()),
                    })?;
            println!("SIP passwords set for {set} agents (stored as digest HA1)");
        }
        store.close().await;
        Ok(())
    })
}
