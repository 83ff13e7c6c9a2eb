//! The async shell around [`super::B2bua`]: one task that `select!`s over inbound SIP, engine
//! actions, media events, model updates, timers and shutdown, feeds the core, and carries out
//! its outputs (STYLE.md §4).
//!
//! One task owns the whole SIP state of a node. That keeps the core lock-free and ordered:
//! a CANCEL can never overtake the INVITE it cancels, and an engine offer always sees the call
//! it refers to. The per-packet media work runs in the relay's own threads, so this task
//! handles only signalling (a dozen messages per call).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acd_core::{Action, Input};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::control::ControlMessage;
use super::core::{B2bua, CdrRow, MediaPort, Now, RecordingSettings};
use super::model::GatewayModel;
use crate::media::MediaEvent;
use crate::transport::{Inbound, Outbound};

/// The channels that connect the gateway to the rest of the process.
#[derive(Debug)]
pub struct GatewayIo {
    /// Routing inputs for a tenant's engine (new contact, offer accepted, abandon...).
    pub routing: mpsc::UnboundedSender<(Uuid, Input)>,
    /// Actions of the tenants' engines.
    pub actions: mpsc::UnboundedReceiver<(Uuid, Action)>,
    /// CDR rows to persist.
    pub cdrs: mpsc::UnboundedSender<CdrRow>,
    /// The current model; a change is applied between two messages.
    pub model: watch::Receiver<Arc<GatewayModel>>,
    /// Becomes `true` to start a graceful shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Call-control requests and live-call listings from the API (see [`super::control`]).
    pub control: mpsc::UnboundedReceiver<ControlMessage>,
    /// Where recordings go and which queues record every call; a change applies to calls
    /// bridged afterwards.
    pub recording: watch::Receiver<RecordingSettings>,
}

fn now() -> Now {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now {
        mono: Instant::now(),
        wall_ms,
    }
}

/// Runs the gateway until shutdown has drained the calls (or `grace` has passed).
pub(crate) async fn drive<M: MediaPort>(
    mut core: B2bua<M>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
    out: Outbound,
    mut io: GatewayIo,
    grace: Duration,
) {
    core.set_model(&io.model.borrow_and_update().clone());
    core.handle_timeout(now());
    core.set_recording_settings(io.recording.borrow_and_update().clone());
    let mut draining_until: Option<tokio::time::Instant> = None;
    let mut actions_open = true;
    let mut media_open = true;
    let mut control_open = true;
    let mut recording_open = true;
    loop {
        let wake = core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let drain_deadline = draining_until
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            msg = inbound.recv() => match msg {
                Some(Inbound::Datagram { bytes, source }) => core.handle_datagram(now(), bytes, source),
                Some(Inbound::Message { message, source }) => core.handle_message(now(), message, source),
                None => break,
            },
            action = io.actions.recv(), if actions_open => match action {
                Some((tenant, action)) => core.handle_action(now(), tenant, action),
                None => actions_open = false,
            },
            ev = media_events.recv(), if media_open => match ev {
                Some(ev) => core.handle_media_event(now(), ev),
                None => media_open = false,
            },
            msg = io.control.recv(), if control_open => match msg {
                Some(ControlMessage::Control { request, reply }) => {
                    let _ = reply.send(core.handle_control(now(), request));
                }
                Some(ControlMessage::Calls { tenant, reply }) => {
                    let _ = reply.send(core.calls_snapshot(tenant));
                }
                None => control_open = false,
            },
            changed = io.recording.changed(), if recording_open => {
                if changed.is_ok() {
                    core.set_recording_settings(io.recording.borrow_and_update().clone());
                } else {
                    recording_open = false;
                }
            }
            changed = io.model.changed() => {
                if changed.is_ok() {
                    let model = io.model.borrow_and_update().clone();
                    core.set_model(&model);
                    // Trunks added by the update start registering and probing now.
                    core.handle_timeout(now());
                    tracing::info!(tenants = model.tenants.len(), "SIP model updated");
                }
            }
            changed = io.shutdown.changed(), if draining_until.is_none() => {
                if changed.is_err() || *io.shutdown.borrow() {
                    core.stop_accepting();
                    core.unregister_trunks(now());
                    draining_until = Some(tokio::time::Instant::now() + grace);
                    tracing::info!(calls = core.active_calls(), "SIP: no new calls; waiting for calls in progress");
                }
            }
            () = tokio::time::sleep_until(wake) => core.handle_timeout(now()),
            () = tokio::time::sleep_until(drain_deadline), if draining_until.is_some() => {
                tracing::warn!(calls = core.active_calls(), "shutdown grace over; ending calls");
                core.end_all(now());
                flush(&mut core, &out, &io);
                break;
            }
        }
        flush(&mut core, &out, &io);
        if draining_until.is_some() && core.active_calls() == 0 {
            break;
        }
    }
    // Give final BYEs and responses a moment on the wire before the sockets close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tracing::info!(counters = ?core.counters(), "SIP gateway stopped");
}

fn flush<M: MediaPort>(core: &mut B2bua<M>, out: &Outbound, io: &GatewayIo) {
    while let Some(t) = core.poll_transmit() {
        out.send(t.peer, t.bytes);
    }
    while let Some(input) = core.poll_routing() {
        let _ = io.routing.send(input);
    }
    while let Some(cdr) = core.poll_cdr() {
        let _ = io.cdrs.send(cdr);
    }
}
