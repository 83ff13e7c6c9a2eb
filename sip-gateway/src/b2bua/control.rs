//! Call control from outside the SIP dialogs: what an agent desktop, a supervisor or an
//! integration asks of a live call (hold, transfer, recording, monitoring, hang-up), and the
//! list of live calls they choose from.
//!
//! The API server (crm-api) must not depend on sip-gateway, so the binary translates crm-api's
//! plain request into a [`ControlRequest`] and sends it, with a oneshot for the answer, as a
//! [`ControlMessage`] on the channel the driver `select!`s over. The driver calls
//! [`B2bua::handle_control`] — synchronous and sans-IO like every other input, so a unit test
//! drives it with a fake clock and `FakeMedia` — and flushes the SIP messages and media
//! commands it produced exactly as after a datagram.
//!
//! Rights (who may do what to which call) are crm-api's business: it knows roles and users.
//! The core checks only what it alone knows: whether the call exists in that tenant, whether
//! it is connected, whether a supervisor's phone is registered. Each refusal is a
//! [`ControlError`] whose message an API can show as is.
//!
//! Each operation lives in a child module of `core` (`core/recording.rs`, `core/supervise.rs`,
//! hold and transfer in theirs); this file holds the types and the one dispatching `match`.

use acd_core::{AgentId, ContactId, QueueId};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::core::{B2bua, MediaPort, Now};
pub use crate::audio::mix::SupervisorMode;

/// What to do with a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallControl {
    /// Puts the caller on hold (music), the agent's leg stays up.
    Hold,
    /// Ends a hold.
    Resume,
    /// Blind transfer of the caller.
    Transfer {
        /// Where the caller goes.
        target: TransferTarget,
    },
    /// Starts recording the call (stereo: caller left, agent right).
    RecordingStart,
    /// Stops the recording and finishes the file.
    RecordingStop,
    /// Writes silence until resumed (payment card numbers); the pause goes into the CDR.
    RecordingPause,
    /// Ends a pause.
    RecordingResume,
    /// Rings the supervisor's phone and, when answered, joins it as the third leg; on a call
    /// already monitored by the same supervisor, switches the mode.
    Monitor {
        /// The supervisor (an agent id with a registered phone).
        supervisor: AgentId,
        /// Listen, whisper or barge.
        mode: SupervisorMode,
    },
    /// Ends monitoring (BYE to the supervisor's phone, the plain bridge again).
    StopMonitor,
    /// Ends the call (BYE to every leg; a queued caller gets a final response).
    Hangup,
}

/// Where a transfer sends the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferTarget {
    /// Back into a queue (re-enters with its priority).
    Queue(QueueId),
    /// Straight to an agent's phone.
    Agent(AgentId),
    /// An external number through the trunk.
    Number(String),
}

/// One control request: which call, of which tenant, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    /// The tenant (crm-api's id); a call of another tenant is [`ControlError::NoSuchCall`].
    pub tenant: Uuid,
    /// The call, by acd-core's contact id.
    pub contact: ContactId,
    /// The operation.
    pub control: CallControl,
}

/// Why a control request was refused. The messages are meant for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No live call with this contact id in this tenant.
    #[error("no such call")]
    NoSuchCall,
    /// The operation needs a call connected to an agent; this one is still queued or ringing.
    #[error("the call is not connected to an agent")]
    NotConnected,
    /// The supervisor (or transfer target agent) has no registered phone.
    #[error("the phone of that user is not registered")]
    NoPhone,
    /// The operation is not built yet (or not for this kind of call).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// Recording stop/pause/resume on a call that is not being recorded.
    #[error("the call is not being recorded")]
    NotRecording,
    /// Recording start on a call that is already being recorded.
    #[error("the call is already being recorded")]
    AlreadyRecording,
    /// Pause on a paused recording, or resume on a running one.
    #[error("the recording is already {0}")]
    RecordingState(&'static str),
    /// No directory for recordings is configured on this node.
    #[error("recording is not configured on this node")]
    NoRecordingDirectory,
    /// The media relay could not add the third leg (no free ports).
    #[error("no media ports left for the third leg")]
    NoMedia,
    /// Stop-monitor on a call nobody monitors.
    #[error("no supervisor is monitoring this call")]
    NotMonitored,
    /// Another supervisor already monitors this call.
    #[error("another supervisor is already monitoring this call")]
    AlreadyMonitored,
    /// The gateway is not running (shut down, or not started in this process).
    #[error("call control is not available")]
    Unavailable,
}

/// Where a live call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallPhase {
    /// Waiting in the queue (no phone ringing).
    Queued,
    /// An agent's phone rings.
    Ringing,
    /// Bridged to an agent.
    Connected,
}

/// The recording of a live call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordingStatus {
    /// Not recorded.
    Off,
    /// Recording.
    On,
    /// Recording, paused (silence is written).
    Paused,
}

/// One live call as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// acd-core's contact id.
    pub contact: ContactId,
    /// The queue it came in through (or was transferred to).
    pub queue: QueueId,
    /// The agent it is connected to (or whose phone rings).
    pub agent: Option<AgentId>,
    /// Where it is.
    pub phase: CallPhase,
    /// The caller's number (user part of From).
    pub caller: String,
    /// When the call arrived, ms since the epoch.
    pub since_ms: u64,
    /// When an agent answered.
    pub answered_ms: Option<u64>,
    /// The recording.
    pub recording: RecordingStatus,
    /// The supervisor monitoring it, and how (their phone may still be ringing).
    pub monitored_by: Option<(AgentId, SupervisorMode)>,
}

/// What the driver receives on its control channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControlMessage {
    /// Carry out a request; the answer goes back on `reply`.
    Control {
        /// The request.
        request: ControlRequest,
        /// Where the answer goes (a dropped receiver is fine).
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// List a tenant's live calls.
    Calls {
        /// The tenant.
        tenant: Uuid,
        /// Where the list goes.
        reply: oneshot::Sender<Vec<CallInfo>>,
    },
}

impl<M: MediaPort> B2bua<M> {
    /// Carries out a control request on a live call. Outputs (BYEs, INVITEs to a supervisor,
    /// media commands) are queued like those of any other input: drain `poll_*` afterwards.
    pub fn handle_control(&mut self, now: Now, req: ControlRequest) -> Result<(), ControlError> {
        let key = self.live_call(req.tenant, req.contact)?;
        match req.control {
            CallControl::Hold => self.control_hold(now, key),
            CallControl::Resume => self.control_resume(now, key),
            CallControl::Transfer { target } => self.control_transfer(now, key, target),
            CallControl::RecordingStart => self.recording_start(now, key),
            CallControl::RecordingStop => self.recording_stop(now, key),
            CallControl::RecordingPause => self.recording_pause(now, key),
            CallControl::RecordingResume => self.recording_resume(now, key),
            CallControl::Monitor { supervisor, mode } => self.monitor(now, key, supervisor, mode),
            CallControl::StopMonitor => self.stop_monitor(now, key),
            CallControl::Hangup => self.control_hangup(now, key),
        }
    }
}
