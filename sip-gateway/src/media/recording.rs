//! The recording thread: writes the WAV files of recorded calls off the workers' packet loop.
//!
//! A worker must never wait on a disk. It hands each 20 ms recording frame to this thread over
//! a bounded channel with `try_send` (the channel's slots are allocated once, so a frame costs
//! a copy and no allocation); the thread owns the [`Recorder`]s with their buffered files and
//! reports [`MediaEvent::Recorded`] (or [`MediaEvent::RecordingFailed`]) itself. If the disk
//! falls so far behind that the channel is full, frames are dropped and counted rather than
//! stalling every call of the worker; the summary's length then falls short by as much, and
//! the loss is logged.
//!
//! The thread polls the queue (drain, then sleep 20 ms) instead of blocking on it, so that a
//! worker's `try_send` never has to wake it: at 100 recorded calls that is 5,000 futex wake-ups
//! per second saved in the worker's loop.
//!
//! Messages of one call arrive in the order the worker sent them, so a pause, the frames and
//! the stop line up with the call's timeline exactly as the worker saw it.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::mpsc as tmpsc;

use super::relay::{MediaEvent, MediaSessionId};
use crate::audio::Frame;
use crate::audio::record::Recorder;

/// How long the thread sleeps when the queue is empty.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Frames queued at most (per relay): 0.8 s of 100 recorded calls. Each slot holds a frame
/// pair (≈ 650 bytes), so this is ≈ 2.7 MB per relay once the ring has been used.
const QUEUE: usize = 4_096;

/// What the workers tell the recording thread.
// The frame variant is large on purpose: boxing it would allocate per frame, and the channel's
// slots are allocated once.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RecordMsg {
    /// Create the file and start.
    Start {
        id: MediaSessionId,
        path: PathBuf,
        mono: bool,
    },
    /// One tick: caller (left) and agent side (right).
    Frame {
        id: MediaSessionId,
        left: Frame,
        right: Frame,
    },
    Pause(MediaSessionId),
    Resume(MediaSessionId),
    /// Finish the file and report it.
    Stop(MediaSessionId),
    /// End the thread (the relay is dropped); open recordings are finished first.
    Shutdown,
}

/// The sending side, one clone per worker.
#[derive(Clone)]
pub(crate) struct RecordingQueue {
    tx: SyncSender<RecordMsg>,
}

impl RecordingQueue {
    /// Queues a message without blocking; false when the queue is full or the thread gone.
    pub(crate) fn send(&self, msg: RecordMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues a control message (start, stop, pause), waiting for room if needed: these are
    /// rare, and losing a stop would leave a file unfinished.
    pub(crate) fn send_control(&self, msg: RecordMsg) {
        let _ = self.tx.send(msg);
    }
}

/// Starts the recording thread.
pub(crate) fn start(
    events: tmpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<(RecordingQueue, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("media-recorder".into())
        .spawn(move || run(rx, events))?;
    Ok((RecordingQueue { tx }, thread))
}

struct Open {
    path: PathBuf,
    recorder: Recorder<BufWriter<File>>,
}

fn run(rx: Receiver<RecordMsg>, events: tmpsc::UnboundedSender<MediaEvent>) {
    let mut open: HashMap<MediaSessionId, Open> = HashMap::new();
    let fail = |id, path: PathBuf, error: String| {
        tracing::warn!(?id, path = %path.display(), %error, "recording failed");
        let _ = events.send(MediaEvent::RecordingFailed { id, path, error });
    };
    let finish = |id, o: Open| match o.recorder.finish() {
        Ok(summary) => {
            let _ = events.send(MediaEvent::Recorded {
                id,
                path: o.path,
                summary,
            });
        }
        Err(e) => fail(id, o.path, e.to_string()),
    };
    loop {
        // Drain what is queued, then sleep: a thread blocked in `recv` would be woken (a
        // futex call in the worker) for every frame, and the worker's CPU matters more than
        // a few ms of delay in writing a file.
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                std::thread::sleep(DRAIN_EVERY);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            RecordMsg::Start { id, path, mono } => {
                if let Some(o) = open.remove(&id) {
                    finish(id, o);
                }
                // Recordings go into per-tenant, per-day directories (b2bua core/recording.rs)
                // that exist only once the day's first call is recorded.
                if let Some(dir) = path.parent()
                    && let Err(e) = std::fs::create_dir_all(dir)
                {
                    fail(id, path, e.to_string());
                    continue;
                }
                let file = match File::create(&path) {
                    Ok(f) => BufWriter::with_capacity(32 * 1024, f),
                    Err(e) => {
                        fail(id, path, e.to_string());
                        continue;
                    }
                };
                let recorder = if mono {
                    Recorder::new_mono(file)
                } else {
                    Recorder::new(file)
                };
                match recorder {
                    Ok(recorder) => {
                        open.insert(id, Open { path, recorder });
                    }
                    Err(e) => fail(id, path, e.to_string()),
                }
            }
            RecordMsg::Frame { id, left, right } => {
                if let Some(o) = open.get_mut(&id)
                    && let Err(e) = o.recorder.write_frame(&left, &right)
                    && let Some(o) = open.remove(&id)
                {
                    fail(id, o.path, e.to_string());
                }
            }
            RecordMsg::Pause(id) => {
                if let Some(o) = open.get_mut(&id) {
                    o.recorder.pause();
                }
            }
            RecordMsg::Resume(id) => {
                if let Some(o) = open.get_mut(&id) {
                    o.recorder.resume();
                }
            }
            RecordMsg::Stop(id) => {
                if let Some(o) = open.remove(&id) {
                    finish(id, o);
                }
            }
            RecordMsg::Shutdown => break,
        }
    }
    for (id, o) in open.drain() {
        finish(id, o);
    }
}
