//! Live calls: listing them and controlling them (hold, transfer, recording, supervisor
//! monitoring, hang-up) over HTTP.
//!
//! crm-api never depends on sip-gateway (ARCHITECTURE.md), so it speaks to the SIP side
//! through a [`CallControlPort`] of its own: a channel of [`CallRequest`]s in plain types
//! (strings, UUIDs, small enums), each with a oneshot for the answer. The binary owns the
//! receiving end, translates a request into the gateway's call-control request, and maps the
//! gateway's refusal back to a [`CallError`]. Without a port (tests of other modules, a
//! node without SIP) every call endpoint answers `503 unavailable`.
//!
//! Rights are decided here, where users and roles are known; the gateway only checks what it
//! alone knows (the call exists in that tenant, is connected, the supervisor's phone is
//! registered):
//!
//! | operation                                   | agent       | supervisor, admin |
//! |---------------------------------------------|-------------|-------------------|
//! | list                                        | own calls   | every call        |
//! | hold, resume, transfer, recording pause/resume, hang-up | own call | any call |
//! | recording start/stop                        | —           | any call          |
//! | monitor (listen/whisper/barge), stop        | —           | any call          |
//!
//! An agent's "own call" is one whose `agent` is the agent id of the user. A call that is not
//! the caller's to see — another agent's, or another tenant's — is `404`, never `403`, so
//! its existence is not revealed. Monitoring and every recording change are audited (who
//! listened to which call, who stopped the recording while a card number was read).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiJson};
use crate::ids::TenantId;
use crate::state::AppState;

/// How a supervisor joins a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorMode {
    /// Hears both; nobody hears the supervisor.
    Listen,
    /// Hears both; only the agent hears the supervisor.
    Whisper,
    /// Three-way: everyone hears everyone.
    Barge,
}

/// Where a live call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// Waiting in a queue.
    Queued,
    /// An agent's phone rings.
    Ringing,
    /// Connected to an agent.
    Connected,
}

/// The recording of a live call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Not recorded.
    Off,
    /// Recording.
    On,
    /// Recording paused (silence is written).
    Paused,
}

/// Who monitors a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Monitoring {
    /// The supervisor's agent id.
    pub supervisor: String,
    /// How.
    pub mode: MonitorMode,
}

/// One live call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveCall {
    /// The contact id (also the CDR's and the queue log's).
    pub contact: Uuid,
    /// The queue.
    pub queue: String,
    /// The agent connected (or whose phone rings).
    pub agent: Option<String>,
    /// Where the call is.
    pub phase: CallPhase,
    /// The caller's number.
    pub caller: String,
    /// When the call arrived.
    pub since: DateTime<Utc>,
    /// When an agent answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// The recording.
    pub recording: RecordingState,
    /// The supervisor monitoring it.
    pub monitored_by: Option<Monitoring>,
}

/// Where a transfer sends the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTo {
    /// A queue (re-enters with its priority).
    Queue(String),
    /// An agent's phone.
    Agent(String),
    /// An external number.
    Number(String),
}

/// What to do with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallAction {
    /// Hold the caller (music).
    Hold,
    /// End the hold.
    Resume,
    /// Blind transfer.
    Transfer(TransferTo),
    /// Start recording.
    RecordingStart,
    /// Stop recording.
    RecordingStop,
    /// Pause recording.
    RecordingPause,
    /// Resume recording.
    RecordingResume,
    /// Ring `supervisor`'s phone and join it in `mode` (or switch the mode).
    Monitor {
        /// The supervisor's agent id.
        supervisor: String,
        /// How.
        mode: MonitorMode,
    },
    /// End monitoring.
    StopMonitor,
    /// End the call.
    Hangup,
}

/// What the SIP side is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOp {
    /// The tenant's live calls.
    List,
    /// An action on one call.
    Control {
        /// The call.
        contact: Uuid,
        /// The action.
        action: CallAction,
    },
}

/// What the SIP side answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallReply {
    /// For [`CallOp::List`].
    Calls(Vec<LiveCall>),
    /// For [`CallOp::Control`]: done.
    Done,
}

/// Why the SIP side refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No such call in this tenant.
    #[error("no such call")]
    NoSuchCall,
    /// The call's state does not allow it (not connected, not recorded, no phone registered,
    /// not built yet …); the message says which, for the client.
    #[error("{0}")]
    Refused(String),
    /// The SIP side is not running.
    #[error("call control is not available")]
    Unavailable,
}

/// One request on the port.
#[derive(Debug)]
pub struct CallRequest {
    /// The tenant whose call it is.
    pub tenant: TenantId,
    /// What to do.
    pub op: CallOp,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<CallReply, CallError>>,
}

/// The sending end of the channel to the SIP side (cheap to clone).
#[derive(Debug, Clone)]
pub struct CallControlPort {
    tx: mpsc::Sender<CallRequest>,
}

impl CallControlPort {
    /// A port and the receiver the binary serves. `capacity` bounds requests in flight.
    pub fn channel(capacity: usize) -> (CallControlPort, mpsc::Receiver<CallRequest>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (CallControlPort { tx }, rx)
    }

    /// Sends `op` and waits for the answer (bounded: the SIP side answers from one task
    /// without I/O, so 5 s means it is gone or stuck).
    pub async fn ask(&self, tenant: TenantId, op: CallOp) -> Result<CallReply, CallError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(CallRequest { tenant, op, reply })
            .await
            .map_err(|_| CallError::Unavailable)?;
        match tokio::time::timeout(std::time::Duration::from_secs(5), rx).await {
            Ok(Ok(r)) => r,
            _ => Err(CallError::Unavailable),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NoSuchCall => ApiError::NotFound,
            CallError::Refused(message) => ApiError::Conflict {
                field: "contact".to_owned(),
                message,
            },
            CallError::Unavailable => ApiError::Unavailable,
        }
    }
}

fn port(state: &AppState) -> Result<&CallControlPort, ApiError> {
    state.call_control().ok_or(ApiError::Unavailable)
}

/// Supervisors and admins act on every call of the tenant; API keys have no call rights.
fn oversees(who: &Principal) -> bool {
    who.scopes.is_none()
        && who.release.is_none()
        && matches!(who.role, Some(Role::Admin | Role::Supervisor))
}

async fn list(state: &AppState, who: &Principal) -> Result<Vec<LiveCall>, ApiError> {
    match port(state)?.ask(who.tenant, CallOp::List).await? {
        CallReply::Calls(calls) => Ok(calls),
        CallReply::Done => Ok(Vec::new()),
    }
}

/// The calls `who` may see.
fn visible(who: &Principal, calls: Vec<LiveCall>) -> Vec<LiveCall> {
    if oversees(who) {
        return calls;
    }
    match (&who.agent, who.role, &who.scopes) {
        (Some(me), Some(_), None) => calls
            .into_iter()
            .filter(|c| c.agent.as_deref() == Some(me.as_str()) && who.sees_queue(&c.queue))
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_contact(contact: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(contact)
        .map_err(|_| ApiError::validation("contact", "not a contact id (a UUID)"))
}

/// Checks that `who` may do `action` to `contact`, then does it.
async fn act(
    state: &AppState,
    who: &Principal,
    contact: &str,
    action: CallAction,
) -> Result<StatusCode, ApiError> {
    let contact = parse_contact(contact)?;
    let agent_may = matches!(
        action,
        CallAction::Hold
            | CallAction::Resume
            | CallAction::Transfer(_)
            | CallAction::RecordingPause
            | CallAction::RecordingResume
            | CallAction::Hangup
    );
    if !oversees(who) {
        if who.role.is_none() || who.scopes.is_some() {
            return Err(ApiError::Forbidden);
        }
        let own = visible(who, list(state, who).await?)
            .iter()
            .any(|c| c.contact == contact);
        if !own {
            return Err(ApiError::NotFound);
        }
        if !agent_may {
            return Err(ApiError::Forbidden);
        }
    }
    let audit = match &action {
        CallAction::Monitor { supervisor, mode } => Some((
            "monitor",
            serde_json::json!({"supervisor": supervisor, "mode": mode}),
        )),
        CallAction::StopMonitor => Some(("monitor_stop", serde_json::json!({}))),
        CallAction::RecordingStart => Some(("recording_start", serde_json::json!({}))),
        CallAction::RecordingStop => Some(("recording_stop", serde_json::json!({}))),
        CallAction::RecordingPause => Some(("recording_pause", serde_json::json!({}))),
        CallAction::RecordingResume => Some(("recording_resume", serde_json::json!({}))),
        _ => None,
    };
    port(state)?
        .ask(who.tenant, CallOp::Control { contact, action })
        .await?;
    if let Some((what, after)) = audit {
        state
            .audit(who, "call", &contact.to_string(), what, None, Some(after))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's live calls (an agent sees only their own).
#[utoipa::path(get, path = "/api/v1/calls", tag = "calls",
    responses((status = 200, body = Vec<LiveCall>), (status = 401, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn list_calls(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<Vec<LiveCall>>, ApiError> {
    if who.role.is_none() || who.scopes.is_some() {
        return Err(ApiError::Forbidden);
    }
    let calls = list(&state, &who).await?;
    Ok(axum::Json(visible(&who, calls)))
}

/// Puts the caller on hold.
#[utoipa::path(post, path = "/api/v1/calls/{contact}/hold", tag = "calls",
    params(("contact" = String, Path, description = "contact id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn hold(
    State(state): State<AppState>,
    who: Principal,
    Path(contact): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&state, &who, &contact, CallAction::Hold).await
}

/// Ends a hold.
#[utoipa::path(post, path = "/api/v1/calls/{contact}/resume", tag = "calls",
    params(("contact" = String, Path, description = "contact id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    Path(contact): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&state, &who, &contact, CallAction::Resume).await
}

/// Where to transfer: exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// A queue name.
    pub queue: Option<String>,
    /// An agent id.
    pub agent: Option<String>,
    /// An external number (E.164).
    pub number: Option<String>,
}

impl TransferBody {
    fn target(self) -> Result<TransferTo, ApiError> {
        let name_ok = |field: &str, v: &str| {
            if v.is_empty() || v.len() > 64 || v.chars().any(char::is_control) {
                Err(ApiError::validation(field, "1-64 printable characters"))
            } else {
                Ok(())
            }
        };
        match (self.queue, self.agent, self.number) {
            (Some(q), None, None) => name_ok("queue", &q).map(|()| TransferTo::Queue(q)),
            (None, Some(a), None) => name_ok("agent", &a).map(|()| TransferTo::Agent(a)),
            (None, None, Some(n)) => {
                let digits = n.strip_prefix('+').unwrap_or(&n);
                if digits.is_empty()
                    || digits.len() > 20
                    || !digits.chars().all(|c| c.is_ascii_digit())
                {
                    Err(ApiError::validation(
                        "number",
                        "a phone number: optional + and 1-20 digits",
                    ))
                } else {
                    Ok(TransferTo::Number(n))
                }
            }
            _ => Err(ApiError::validation(
                "queue",
                "give exactly one of queue, agent or number",
            )),
        }
    }
}

/// Blind transfer of the caller to a queue, an agent or a number.
#[utoipa::path(post, path = "/api/v1/calls/{contact}/transfer", tag = "calls",
    params(("contact" = String, Path, description = "contact id")),
    request_body = TransferBody,
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn transfer(
    State(state): State<AppState>,
    who: Principal,
    Path(contact): Path<String>,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<StatusCode, ApiError> {
    let target = body.target()?;
    act(&state, &who, &contact, CallAction::Transfer(target)).await
}

/// Starts, stops, pauses or resumes the call's recording (`action`: start, stop, pause,
/// resume). Agents may pause and resume on their own call (payment card numbers).
#[utoipa::path(post, path = "/api/v1/calls/{contact}/recording/{action}", tag = "calls",
    params(("contact" = String, Path, description = "contact id"),
        ("action" = String, Path, description = "start, stop, pause or resume")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn recording(
    State(state): State<AppState>,
    who: Principal,
    Path((contact, action)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let action = match action.as_str() {
        "start" => CallAction::RecordingStart,
        "stop" => CallAction::RecordingStop,
        "pause" => CallAction::RecordingPause,
        "resume" => CallAction::RecordingResume,
        _ => {
            return Err(ApiError::validation(
                "action",
                "one of start, stop, pause, resume",
            ));
        }
    };
    act(&state, &who, &contact, action).await
}

/// How to monitor.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorBody {
    /// listen, whisper or barge.
    pub mode: MonitorMode,
    /// Whose phone rings: an agent id. Defaults to the caller's own; only an admin may name
    /// someone else.
    pub supervisor: Option<String>,
}

/// Rings the supervisor's phone and joins the call in `mode`; on a call the same supervisor
/// already monitors, switches the mode.
#[utoipa::path(post, path = "/api/v1/calls/{contact}/monitor", tag = "calls",
    params(("contact" = String, Path, description = "contact id")),
    request_body = MonitorBody,
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn monitor(
    State(state): State<AppState>,
    who: Principal,
    Path(contact): Path<String>,
    ApiJson(body): ApiJson<MonitorBody>,
) -> Result<StatusCode, ApiError> {
    if !oversees(&who) {
        // Checked before anything else: an agent learns nothing about calls from this.
        return Err(ApiError::Forbidden);
    }
    let supervisor = match (body.supervisor, &who.agent) {
        (Some(s), own) if own.as_deref() != Some(s.as_str()) => {
            if who.role != Some(Role::Admin) {
                return Err(ApiError::Forbidden);
            }
            if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
                return Err(ApiError::validation(
                    "supervisor",
                    "1-64 printable characters",
                ));
            }
            s
        }
        (Some(s), _) => s,
        (None, Some(own)) => own.clone(),
        (None, None) => {
            return Err(ApiError::validation(
                "supervisor",
                "your user has no agent id (no phone to ring); name a supervisor's agent id",
            ));
        }
    };
    act(
        &state,
        &who,
        &contact,
        CallAction::Monitor {
            supervisor,
            mode: body.mode,
        },
    )
    .await
}

/// Ends monitoring.
#[utoipa::path(delete, path = "/api/v1/calls/{contact}/monitor", tag = "calls",
    params(("contact" = String, Path, description = "contact id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn stop_monitor(
    State(state): State<AppState>,
    who: Principal,
    Path(contact): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !oversees(&who) {
        return Err(ApiError::Forbidden);
    }
    act(&state, &who, &contact, CallAction::StopMonitor).await
}

/// Ends the call.
#[utoipa::path(post, path = "/api/v1/calls/{contact}/hangup", tag = "calls",
    params(("contact" = String, Path, description = "contact id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn hangup(
    State(state): State<AppState>,
    who: Principal,
    Path(contact): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&state, &who, &contact, CallAction::Hangup).await
}

/// The queues of a tenant's recorded calls: `(contact id, queue)` for every caller-leg CDR
/// that names a recording. The retention sweep asks this to learn which queue's retention
/// applies to a file (the file name is the contact id).
pub async fn recorded_queues(
    store: &crate::Store,
    tenant: TenantId,
) -> Result<Vec<(String, Option<String>)>, crate::StoreError> {
    Ok(crate::store::with_pool!(store, |p| {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT contact_id, queue FROM cdr \
             WHERE tenant_id = $1 AND leg = 'caller' AND recording IS NOT NULL",
        )
        .bind(tenant.as_text())
        .fetch_all(p)
        .await?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_body_needs_exactly_one_valid_target() {
        let t = |q: Option<&str>, a: Option<&str>, n: Option<&str>| {
            TransferBody {
                queue: q.map(str::to_owned),
                agent: a.map(str::to_owned),
                number: n.map(str::to_owned),
            }
            .target()
        };
        assert_eq!(
            t(Some("support"), None, None).ok(),
            Some(TransferTo::Queue("support".into()))
        );
        assert_eq!(
            t(None, None, Some("+4930123")).ok(),
            Some(TransferTo::Number("+4930123".into()))
        );
        assert!(t(None, None, None).is_err());
        assert!(t(Some("a"), Some("b"), None).is_err());
        assert!(matches!(
            t(None, None, Some("12; drop")),
            Err(ApiError::Validation { field, .. }) if field == "number"
        ));
        assert!(matches!(
            t(Some(""), None, None),
            Err(ApiError::Validation { field, .. }) if field == "queue"
        ));
    }
}
