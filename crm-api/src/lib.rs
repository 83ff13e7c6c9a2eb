//! crm-api — zentrale's HTTP/WebSocket API and its persistence.
//!
//! It serves `/api/v1/…` (JSON, OpenAPI 3.1 at `/api/v1/openapi.json`) for the agent desktop,
//! supervisors, admins and integrations, and stores everything durable: tenants, users and
//! rights, customers with one timeline, tickets, the routing model, the audit log, and the
//! queue log and CDRs that the SIP side produces (passed in by the binary, since sip-gateway
//! and crm-api never depend on each other).
//!
//! # Layout
//!
//! - [`store`]: [`Store`] over SQLite or PostgreSQL, migrations, queue log.
//! - [`error`]: [`ApiError`] (the one error shape), the JSON extractor, pagination.
//! - [`auth`]: logins, sessions, API keys, roles, service providers, [`auth::Principal`].
//! - [`customers`]: customers, identities, custom fields, timeline, tickets, CDRs.
//! - [`events`]: the `/api/v1/events` WebSocket and screen pop.
//! - [`calls`]: live calls — list, hold, transfer, recording, supervisor monitoring, hang-up —
//!   through a [`calls::CallControlPort`] the binary connects to the SIP side.
//! - [`routing`]: routing administration, audit, the live [`routing::RoutingUpdate`] channel.
//! - [`sip_credentials`]: agents' SIP extensions and digest secrets (HA1 per tenant realm).
//! - [`prompts`]: tenants' own prompts and music (WAV uploads, applied live).
//! - [`provision`]: applying a routing TOML file.
//! - [`demo`]: the demo tenant.
//!
//! # Wiring (for the binary)
//!
//! ```text
//! let store = Store::open("sqlite://<data dir>/zentrale.db?mode=rwc").await?;   // or postgres://…
//! if demo { crm_api::demo::seed(&store).await?; }            // prints: crm_api::demo::DEMO_LOGINS
//! let state = AppState::new(store.clone());
//! let app = crm_api::router(state.clone());                   // merge with the other routers
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())  // client
//!                                                             // address for the login limit
//! let mut routing = state.subscribe_routing();                // RoutingUpdate { tenant, config, model }
//! //  → engine.apply_config(now, (*update.config).clone()) on the engine's task
//! state.routing_config(tenant).await?                         // initial config at start
//! state.screen_pop(tenant, "1001", caller_number, &contact_id.to_string()).await?
//! store.append_queue_log(&rows).await?; store.insert_cdrs(&batch).await?;  // one transaction each
//! store.record_wrap_ups(&wraps).await?                       // wrap-up ends after the CDR
//! crm_api::sip_credentials::load_credentials(&store, tenant)  // agents' HA1 for the registrar
//!                                                             // (also in every RoutingUpdate.sip)
//! crm_api::provision::apply(&store, tenant, &toml_text).await?  // `zentrale provision`
//! state.set_data_dir(data_dir);                               // prompt uploads live under it
//! let mut prompts = state.subscribe_prompts();                // tenant whose uploads changed
//! //  → reload crm_api::prompts::tenant_dir(data_dir, tenant) off the SIP task
//! ```
//!
//! # Design
//!
//! Handlers are thin: authenticate ([`auth::Principal`] extractor), check one
//! [`auth::Perm`], validate, run tenant-scoped SQL. State that must be shared across requests
//! lives in [`AppState`]; time comes from an injected [`clock::Clock`] so that session expiry and
//! rate limits are tested without sleeping. See [`store`] for why one SQL text serves both
//! backends.
#![forbid(unsafe_code)]

pub mod auth;
pub mod calls;
pub mod clock;
pub mod customers;
pub mod demo;
pub mod error;
pub mod events;
pub mod ids;
pub mod prompts;
pub mod provision;
pub mod routing;
pub mod sip_credentials;
mod state;
pub mod store;

pub use error::{ApiError, StoreError};
pub use state::{AppState, AuditChange, audit_row};
pub use store::{HashCost, QueueLogEntry, Store};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 256 * 1024;

#[derive(OpenApi)]
#[openapi(info(
    title = "zentrale API",
    description = "Virtual ACD and agent workspace"
))]
struct ApiDoc;

/// The OpenAPI document and the routes, built together from the handlers' annotations.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::totp_setup))
        .routes(routes!(auth::totp_enable))
        .routes(routes!(auth::list_users, auth::post_user))
        .routes(routes!(auth::list_api_keys, auth::post_api_key))
        .routes(routes!(auth::revoke_api_key))
        .routes(routes!(auth::list_providers, auth::post_provider))
        .routes(routes!(auth::patch_user, auth::delete_user))
        .routes(routes!(auth::patch_provider, auth::delete_provider))
        .routes(routes!(events::events_ws))
        .routes(routes!(customers::list_customers, customers::post_customer))
        .routes(routes!(customers::lookup_customer))
        .routes(routes!(customers::get_customer, customers::patch_customer))
        .routes(routes!(customers::merge_customer))
        .routes(routes!(customers::get_timeline, customers::post_timeline))
        .routes(routes!(customers::list_fields, customers::post_field))
        .routes(routes!(customers::list_tickets, customers::post_ticket))
        .routes(routes!(customers::get_ticket, customers::patch_ticket))
        .routes(routes!(customers::list_cdrs))
        .routes(routes!(routing::list_objects))
        .routes(routes!(
            routing::get_object,
            routing::put_object,
            routing::delete_object
        ))
        .routes(routes!(
            sip_credentials::get_sip,
            sip_credentials::put_sip,
            sip_credentials::delete_sip
        ))
        .routes(routes!(routing::get_config))
        .routes(routes!(calls::list_calls))
        .routes(routes!(calls::hold))
        .routes(routes!(calls::resume))
        .routes(routes!(calls::transfer))
        .routes(routes!(calls::recording))
        .routes(routes!(calls::monitor, calls::stop_monitor))
        .routes(routes!(calls::hangup))
        .routes(routes!(routing::list_audit))
        .routes(routes!(prompts::list_prompts))
        .routes(routes!(
            prompts::get_prompt,
            prompts::put_prompt,
            prompts::delete_prompt
        ))
        .split_for_parts()
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The API router (`/api/v1/…`), with request ids (`x-request-id`, generated when absent
/// and echoed), tracing spans carrying that id, and the body size limit.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api();
    let doc = std::sync::Arc::new(doc);
    let x_request_id = HeaderName::from_static("x-request-id");
    routes
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let rid = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %rid)
        }))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}
