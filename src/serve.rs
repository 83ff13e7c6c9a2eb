//! `zentrale serve`: starts the runtime, the listeners and the wiring between the crates, and
//! shuts them down gracefully on Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use sip_gateway::gateway::{GatewayIo, GatewayModel};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, LogFormat};
use crate::routing_host::RoutingHost;
use crate::sip_wiring;

/// Loads the configuration, starts everything, and blocks until shutdown.
pub fn run(config_path: Option<&Path>, demo: bool) -> anyhow::Result<()> {
    let config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, demo))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let db_url = config.database_url();
    let store = crm_api::Store::open(&db_url)
        .await
        .with_context(|| format!("cannot open the database {db_url}"))?;
    store
        .migrate()
        .await
        .context("cannot migrate the database schema")?;
    let demo_tenant = if demo {
        Some(
            crm_api::demo::seed(&store)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the demo tenant: {e}"))?,
        )
    } else {
        None
    };
    let state = crm_api::AppState::new(store.clone());
    // Tenants' prompt uploads live under the data directory (crm_api::prompts).
    state.set_data_dir(config.data_dir.clone());
    let prompt_changes = state.subscribe_prompts();

    // Routing engines: one per tenant, reconfigured live whenever the API saves a change; the
    // same task feeds them the SIP side's inputs (sip_wiring.rs).
    let mut routing = RoutingHost::new(store.clone());
    let updates = state.subscribe_routing();
    let actions = routing.subscribe_actions();
    let cdr_actions = routing.subscribe_actions();
    // Every tenant with a routing model gets its engine and its SIP model (agents' phones can
    // register after a restart without anyone touching the configuration first).
    let mut tenants = std::collections::HashMap::new();
    let all = store
        .tenants()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list tenants: {e}"))?;
    for row in all {
        let Some(tenant) = crm_api::ids::TenantId::parse(&row.id) else {
            continue;
        };
        let model = crm_api::routing::load_model(&store, tenant)
            .await
            .map_err(|e| anyhow::anyhow!("cannot load the routing model of {}: {e}", row.slug))?;
        let is_demo = demo_tenant == Some(tenant);
        if model == crm_api::routing::RoutingModel::default() && !is_demo {
            continue;
        }
        let sip = crm_api::sip_credentials::load_credentials(&store, tenant)
            .await
            .map_err(|e| anyhow::anyhow!("cannot load SIP credentials of {}: {e}", row.slug))?;
        routing
            .apply(tenant, Arc::new(model.routing_config()))
            .await;
        tenants.insert(tenant, (model, is_demo, Arc::new(sip)));
    }

    // SIP and media.
    let (models, model_rx) = watch::channel(Arc::new(GatewayModel::default()));
    let prompt_sets = sip_wiring::load_all_prompts(&config.data_dir);
    sip_wiring::publish_model(&models, &tenants, &prompt_sets);
    let (prompt_sets_tx, prompt_sets_rx) = mpsc::unbounded_channel();
    tokio::spawn(sip_wiring::reload_prompts(
        config.data_dir.clone(),
        prompt_changes,
        prompt_sets_tx,
    ));
    let (sip_inputs_tx, sip_inputs) = mpsc::unbounded_channel();
    let (actions_tx, actions_rx) = mpsc::unbounded_channel();
    let (cdr_tx, cdr_rx) = mpsc::unbounded_channel();
    let (sip_shutdown_tx, sip_shutdown) = watch::channel(false);
    // Call control from the API (sip_wiring.rs translates crm-api's requests) and the
    // recording settings (directory, queues that record every call).
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (recording_tx, recording_rx) =
        watch::channel(sip_wiring::recording_settings(&config.data_dir));
    tokio::spawn(sip_wiring::forward_actions(actions, actions_tx));
    let cdr_writer = tokio::spawn(sip_wiring::persist_cdrs(store.clone(), cdr_rx, cdr_actions));
    // Screen pop: the agent's desktop shows the caller the moment the phone answers.
    let (pops_tx, pops_rx) = mpsc::unbounded_channel();
    tokio::spawn(crate::screen_pop::run(
        state.clone(),
        routing.subscribe_actions(),
        pops_rx,
    ));
    tokio::spawn(sip_wiring::run_routing(
        routing,
        updates,
        sip_inputs,
        models,
        tenants,
        pops_tx,
        (prompt_sets, prompt_sets_rx),
    ));
    let gateway = sip_gateway::gateway::start(
        sip_wiring::gateway_config(&config)?,
        GatewayIo {
            routing: sip_inputs_tx,
            actions: actions_rx,
            cdrs: cdr_tx,
            model: model_rx,
            shutdown: sip_shutdown,
            control: control_rx,
            recording: recording_rx,
        },
    )
    .await
    .context("cannot start SIP")?;
    let sip_listeners = gateway.listeners.clone();
    let (port, call_requests) = crm_api::calls::CallControlPort::channel(256);
    state.set_call_control(port);
    tokio::spawn(sip_wiring::serve_call_control(call_requests, control_tx));
    // The settings never change at run time yet (the queues' `record` flag travels in the
    // model); the sender stays alive so the gateway keeps its settings.
    let _recording = recording_tx;
    tokio::spawn(crate::recording_retention::run(
        store.clone(),
        config.data_dir.join("recordings"),
    ));

    let app = crm_api::router(state);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http = listener.local_addr().context("HTTP listener address")?;
    print_banner(http, &db_url, demo, &sip_listeners);
    tracing::info!(%http, database = store.backend_name(), "zentrale serving");
    // Shutdown order: the signal stops new calls (503) and lets calls in progress finish
    // (bounded by the gateway's grace), then the HTTP server stops.
    let mut sip_task = gateway.task;
    let sip_done = async move {
        tokio::select! {
            () = shutdown_signal() => {
                let _ = sip_shutdown_tx.send(true);
                let _ = (&mut sip_task).await;
            }
            _ = &mut sip_task => tracing::error!("SIP gateway stopped unexpectedly"),
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(sip_done)
        .await
        .context("HTTP server failed")?;
    tracing::info!("shutting down");
    // The gateway has stopped, so the CDR channel is closed: let the writer commit what is
    // left (bounded) before the database closes.
    if tokio::time::timeout(std::time::Duration::from_secs(10), cdr_writer)
        .await
        .is_err()
    {
        tracing::error!("CDR writer did not finish within 10 s; the last CDRs may be missing");
    }
    store.close().await;
    Ok(())
}

/// What a newcomer needs to start clicking and calling.
fn print_banner(
    http: SocketAddr,
    db_url: &str,
    demo: bool,
    sip: &[(sip_gateway::sip::transaction::TransportKind, SocketAddr)],
) {
    println!();
    println!("zentrale is running");
    println!("  API          http://{http}/api/v1/  (OpenAPI: http://{http}/api/v1/openapi.json)");
    println!("  events       ws://{http}/api/v1/events");
    println!("  database     {db_url}");
    for (kind, addr) in sip {
        println!("  SIP          {kind:?} {addr}");
    }
    if demo {
        println!("  demo tenant  '{}'", crm_api::demo::DEMO_TENANT);
        for (user, password, role) in crm_api::demo::DEMO_LOGINS {
            println!("    {role:<10} login {user:<6} password {password}");
        }
        let host = sip
            .first()
            .map_or_else(|| "127.0.0.1".to_owned(), |(_, a)| a.to_string());
        println!("  demo queue   support: call sip:100@{host} (or DID +4930123456)");
        println!("  demo phones  register 1001 / demo1001 and 1002 / demo1002 at {host}");
    }
    println!("  stop with Ctrl-C");
    println!();
}

/// Resolves on Ctrl-C or SIGTERM (what systemd sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
