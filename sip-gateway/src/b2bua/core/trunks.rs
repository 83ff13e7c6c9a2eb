//! The B2BUA's side of carrier trunks: registrations and probes driven by the core's clock and
//! transaction layer, inbound identification by source address, and channel counting.
//!
//! The sans-IO state machines live in [`crate::trunk`]; this module owns one of each per
//! configured trunk, sends what they produce through the core's transaction layer and routes
//! the responses back (by transaction id). A model update keeps the state of every trunk whose
//! configuration did not change, so an admin editing a DID does not re-register every carrier.
//! New trunks start on the next [`B2bua::handle_timeout`] (the driver runs one right after each
//! model update), because `set_model` has no clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use uuid::Uuid;

use super::{B2bua, CallKey, MediaPort, Now};
use crate::sip::Message;
use crate::sip::transaction::{Peer, TxId};
use crate::trunk::TrunkModel;
use crate::trunk::probe::{Health, Probe, ProbeConfig};
use crate::trunk::register::{Registration, RegistrationConfig, RegistrationStatus};

/// What the core knows about one trunk, for logs, tests and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkStatus {
    /// Tenant.
    pub tenant: Uuid,
    /// Trunk name.
    pub name: String,
    /// Registration state (`None`: the trunk does not register).
    pub registration: Option<RegistrationStatus>,
    /// Probing verdict.
    pub health: Health,
    /// OPTIONS probes sent.
    pub probes_sent: u64,
    /// Calls on the trunk now (both directions).
    pub channels: u32,
    /// The limit (0 = none).
    pub max_channels: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrunkTx {
    Register,
    Options,
}

#[derive(Debug)]
struct TrunkRuntime {
    model: TrunkModel,
    registration: Option<Registration>,
    probe: Probe,
}

/// Every trunk of every tenant, with its state machines and channel counts.
#[derive(Debug, Default)]
pub(crate) struct TrunkSet {
    running: HashMap<(Uuid, String), TrunkRuntime>,
    /// Channels held per trunk; survives model updates (calls outlive them).
    channels: HashMap<(Uuid, String), u32>,
    by_tx: HashMap<TxId, ((Uuid, String), TrunkTx)>,
    /// Trunk channels each call holds.
    held: HashMap<CallKey, Vec<(Uuid, String)>>,
    /// A model update is waiting to be applied at the next timeout.
    dirty: bool,
    /// Timings (tests shorten them).
    pub(crate) registration: RegistrationConfig,
    pub(crate) probe: ProbeConfig,
}

/// Why an inbound INVITE to a DID is refused by trunk policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InboundRefusal {
    /// The DID is bound to a trunk and the INVITE came from elsewhere (403).
    WrongSource,
    /// The trunk's `max_channels` calls are in progress (503).
    Full,
}

impl InboundRefusal {
    pub(super) fn status(self) -> (u16, &'static str) {
        match self {
            InboundRefusal::WrongSource => (403, "Forbidden"),
            InboundRefusal::Full => (503, "Service Unavailable"),
        }
    }
}

impl<M: MediaPort> B2bua<M> {
    /// The state of every trunk.
    pub fn trunk_statuses(&self) -> Vec<TrunkStatus> {
        let mut v: Vec<TrunkStatus> = self
            .trunks
            .running
            .iter()
            .map(|(k, r)| TrunkStatus {
                tenant: k.0,
                name: k.1.clone(),
                registration: r.registration.as_ref().map(|g| g.status().clone()),
                health: r.probe.health(),
                probes_sent: r.probe.sent(),
                channels: self.trunks.channels.get(k).copied().unwrap_or(0),
                max_channels: r.model.max_channels,
            })
            .collect();
        v.sort_by(|a, b| (a.tenant, &a.name).cmp(&(b.tenant, &b.name)));
        v
    }

    /// `sip.trusted_sources_only`: refuse INVITEs to DIDs from sources that are no trunk.
    pub fn set_trusted_sources_only(&mut self, on: bool) {
        self.trusted_sources_only = on;
    }

    /// Marks the trunks for reconciliation with the new model (called from `set_model`).
    pub(super) fn trunks_model_changed(&mut self) {
        self.trunks.dirty = true;
    }

    pub(super) fn trunks_poll_timeout(&self) -> Option<Instant> {
        if self.trunks.dirty {
            // Applied at the next timeout; the driver runs one after every model update.
            return None;
        }
        self.trunks
            .running
            .values()
            .flat_map(|r| {
                [
                    r.registration.as_ref().and_then(Registration::poll_timeout),
                    r.probe.poll_timeout(),
                ]
            })
            .flatten()
            .min()
    }

    /// Applies a pending model update and starts whatever registrations and probes are due.
    pub(super) fn trunks_timeout(&mut self, now: Now) {
        if self.trunks.dirty {
            self.trunks.dirty = false;
            self.reconcile_trunks(now.mono);
        }
        let keys: Vec<(Uuid, String)> = self.trunks.running.keys().cloned().collect();
        for key in keys {
            let (r1, r2) = (self.rng.random(), self.rng.random());
            let Some(rt) = self.trunks.running.get_mut(&key) else {
                continue;
            };
            let Some(peer) = trunk_peer(&rt.model) else {
                continue;
            };
            let reg = rt
                .registration
                .as_mut()
                .and_then(|g| g.handle_timeout(now.mono, r1));
            let opt = rt.probe.handle_timeout(now.mono, r2);
            if let Some(m) = reg {
                self.send_trunk_request(now, &key, TrunkTx::Register, m, peer);
            }
            if let Some(m) = opt {
                self.send_trunk_request(now, &key, TrunkTx::Options, m, peer);
            }
        }
    }

    fn reconcile_trunks(&mut self, now: Instant) {
        let mut old = std::mem::take(&mut self.trunks.running);
        let local = self.config.sip_address;
        let wanted: Vec<(Uuid, TrunkModel)> = self
            .index
            .trunks
            .iter()
            .flat_map(|(t, list)| list.iter().map(|m| (*t, m.clone())))
            .collect();
        for (tenant, model) in wanted {
            let key = (tenant, model.name.clone());
            let kept = old.remove(&key).filter(|r| r.model == model);
            let rt = match kept {
                Some(r) => r,
                None => {
                    tracing::info!(trunk = %model.name, %tenant, register = model.register, "trunk configured");
                    let token = self.rng.random();
                    TrunkRuntime {
                        registration: (model.register && model.peer_address().is_some()).then(
                            || {
                                Registration::new(
                                    model.clone(),
                                    local,
                                    self.trunks.registration,
                                    token,
                                    now,
                                )
                            },
                        ),
                        probe: Probe::new(&model, local, self.trunks.probe, now),
                        model,
                    }
                }
            };
            self.trunks.running.insert(key, rt);
        }
        // Trunks removed from the model: drop their registrations (best effort un-REGISTER).
        for (key, mut rt) in old {
            tracing::info!(trunk = %key.1, "trunk removed");
            let random = self.rng.random();
            if let (Some(g), Some(peer)) = (rt.registration.as_mut(), trunk_peer(&rt.model))
                && matches!(g.status(), RegistrationStatus::Registered { .. })
                && let Some(m) = g.unregister(random)
            {
                let _ = self.tl.send_request(now, m, peer);
            }
        }
        self.trunks
            .by_tx
            .retain(|_, (k, _)| self.trunks.running.contains_key(k));
    }

    /// Shutdown: removes our binding at every carrier we are registered with (REGISTER with
    /// `Expires: 0`), so the carrier stops sending calls to a node that is going away.
    pub fn unregister_trunks(&mut self, now: Now) {
        let keys: Vec<(Uuid, String)> = self.trunks.running.keys().cloned().collect();
        for key in keys {
            let random = self.rng.random();
            let Some(rt) = self.trunks.running.get_mut(&key) else {
                continue;
            };
            let peer = trunk_peer(&rt.model);
            let msg = rt
                .registration
                .as_mut()
                .filter(|g| matches!(g.status(), RegistrationStatus::Registered { .. }))
                .and_then(|g| g.unregister(random));
            if let (Some(m), Some(peer)) = (msg, peer) {
                tracing::info!(trunk = %key.1, "unregistering from the carrier");
                let _ = self.tl.send_request(now.mono, m, peer);
            }
        }
    }

    fn send_trunk_request(
        &mut self,
        now: Now,
        key: &(Uuid, String),
        kind: TrunkTx,
        msg: Message,
        peer: Peer,
    ) {
        match self.tl.send_request(now.mono, msg, peer) {
            Ok(tx) => {
                self.trunks.by_tx.insert(tx, (key.clone(), kind));
            }
            Err(e) => {
                tracing::warn!(trunk = %key.1, "cannot send to the carrier: {e}");
                if let Some(rt) = self.trunks.running.get_mut(key) {
                    match kind {
                        TrunkTx::Register => {
                            if let Some(g) = rt.registration.as_mut() {
                                g.handle_failure(now.mono);
                            }
                        }
                        TrunkTx::Options => rt.probe.handle_failure(now.mono),
                    }
                }
            }
        }
    }

    /// A response on a trunk transaction; `false` when the transaction is not one of ours.
    pub(super) fn trunk_response(&mut self, now: Now, tx: TxId, resp: &Message) -> bool {
        let Some((key, kind)) = self.trunks.by_tx.get(&tx).cloned() else {
            return false;
        };
        let Some(status) = resp.status() else {
            return true;
        };
        if status < 200 {
            return true;
        }
        self.trunks.by_tx.remove(&tx);
        let random = self.rng.random();
        let Some(rt) = self.trunks.running.get_mut(&key) else {
            return true;
        };
        let peer = trunk_peer(&rt.model);
        match kind {
            TrunkTx::Options => rt.probe.handle_response(now.mono, status),
            TrunkTx::Register => {
                let next = rt
                    .registration
                    .as_mut()
                    .and_then(|g| g.handle_response(now.mono, resp, random));
                if let (Some(m), Some(peer)) = (next, peer) {
                    self.send_trunk_request(now, &key, TrunkTx::Register, m, peer);
                }
            }
        }
        true
    }

    /// A trunk transaction timed out; `false` when it is not one of ours.
    pub(super) fn trunk_tx_timeout(&mut self, now: Now, tx: TxId) -> bool {
        let Some((key, kind)) = self.trunks.by_tx.remove(&tx) else {
            return false;
        };
        if let Some(rt) = self.trunks.running.get_mut(&key) {
            match kind {
                TrunkTx::Register => {
                    if let Some(g) = rt.registration.as_mut() {
                        g.handle_failure(now.mono);
                    }
                }
                TrunkTx::Options => rt.probe.handle_failure(now.mono),
            }
        }
        true
    }

    /// Forgets a finished trunk transaction.
    pub(super) fn trunk_tx_terminated(&mut self, tx: TxId) {
        self.trunks.by_tx.remove(&tx);
    }

    /// The trunk an INVITE from `source` comes from: by address and port, else by IP.
    pub(super) fn trunk_of_source(&self, source: SocketAddr) -> Option<&(Uuid, String)> {
        self.index
            .trunk_source_addrs
            .get(&source)
            .or_else(|| self.index.trunk_sources.get(&source.ip()))
    }

    /// Trunk policy for an inbound INVITE to `dialled` of `tenant` from `source` (module
    /// docs of [`crate::b2bua::model::TenantTrunks`]). On success: the trunk the call came
    /// from, if any, which has a free channel (taken with [`Self::hold_channel`] when the call
    /// is created).
    pub(super) fn admit_inbound(
        &mut self,
        tenant: Uuid,
        dialled: &str,
        source: SocketAddr,
    ) -> Result<Option<String>, InboundRefusal> {
        let from_trunk = self
            .trunk_of_source(source)
            .filter(|(t, _)| *t == tenant)
            .map(|(_, name)| name.clone());
        let bound = self.index.did_trunks.get(dialled).cloned().or_else(|| {
            crate::b2bua::model::normalize_e164(dialled)
                .and_then(|n| self.index.did_trunks.get(&n).cloned())
        });
        match (&bound, &from_trunk) {
            (Some(b), Some(f)) if b == f => {}
            (Some(b), _) => {
                tracing::info!(%dialled, %source, trunk = %b, "INVITE to a trunk-bound DID from another source");
                return Err(InboundRefusal::WrongSource);
            }
            (None, None) if self.trusted_sources_only => {
                tracing::info!(%dialled, %source, "INVITE from a source that is no trunk (trusted_sources_only)");
                return Err(InboundRefusal::WrongSource);
            }
            _ => {}
        }
        if let Some(name) = &from_trunk
            && self
                .index
                .trunks
                .get(&tenant)
                .and_then(|l| l.iter().find(|t| &t.name == name))
                .is_some_and(|t| !self.has_channel(tenant, t))
        {
            tracing::info!(trunk = %name, "trunk at max_channels: refusing an inbound call");
            return Err(InboundRefusal::Full);
        }
        Ok(from_trunk)
    }

    /// Takes one channel of a trunk; `false` when it is at `max_channels`.
    pub(super) fn take_channel(&mut self, tenant: Uuid, name: &str) -> bool {
        let max = self
            .index
            .trunks
            .get(&tenant)
            .and_then(|l| l.iter().find(|t| t.name == name))
            .map_or(0, |t| t.max_channels);
        let n = self
            .trunks
            .channels
            .entry((tenant, name.to_owned()))
            .or_insert(0);
        if max != 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// The number an INVITE dialled: the Request-URI's user, or, for a call from a trunk whose
    /// Request-URI is our registered contact (carriers that send to the binding), the To user.
    pub(super) fn inbound_dialled(
        &self,
        req: &Message,
        source: SocketAddr,
        dialled: String,
    ) -> String {
        if self.index.route(&dialled).is_some()
            || self.index.route_menu(&dialled).is_some()
            || self.trunk_of_source(source).is_none()
        {
            return dialled;
        }
        req.to()
            .ok()
            .flatten()
            .and_then(|t| {
                t.uri
                    .user_unescaped()
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
            })
            .unwrap_or(dialled)
    }

    /// Counts call `key` on a trunk until it finishes.
    pub(super) fn hold_channel(&mut self, key: CallKey, tenant: Uuid, name: &str) {
        if self.take_channel(tenant, name) {
            self.trunks
                .held
                .entry(key)
                .or_default()
                .push((tenant, name.to_owned()));
        }
    }

    /// Moves a channel taken by an outbound attempt to call `key`, released when it finishes.
    pub(super) fn adopt_channel(&mut self, key: CallKey, tenant: Uuid, name: &str) {
        self.trunks
            .held
            .entry(key)
            .or_default()
            .push((tenant, name.to_owned()));
    }

    /// Gives back every trunk channel call `key` held (hook in `finish`).
    pub(super) fn release_call_channels(&mut self, key: CallKey) {
        for (tenant, name) in self.trunks.held.remove(&key).unwrap_or_default() {
            self.release_channel(tenant, &name);
        }
    }

    /// Whether a trunk has a free channel.
    pub(super) fn has_channel(&self, tenant: Uuid, trunk: &TrunkModel) -> bool {
        trunk.max_channels == 0
            || self
                .trunks
                .channels
                .get(&(tenant, trunk.name.clone()))
                .copied()
                .unwrap_or(0)
                < trunk.max_channels
    }

    /// Gives a channel back.
    pub(super) fn release_channel(&mut self, tenant: Uuid, name: &str) {
        let key = (tenant, name.to_owned());
        if let Some(n) = self.trunks.channels.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.trunks.channels.remove(&key);
            }
        }
    }

    /// The trunk's probing verdict (`Unknown` for a trunk not running yet).
    pub(super) fn trunk_health(&self, tenant: Uuid, name: &str) -> Health {
        self.trunks
            .running
            .get(&(tenant, name.to_owned()))
            .map_or(Health::Unknown, |r| r.probe.health())
    }
}

/// Where requests to a trunk go.
pub(super) fn trunk_peer(model: &TrunkModel) -> Option<Peer> {
    Some(Peer {
        addr: model.peer_address()?,
        transport: model.transport,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::super::tests::{Harness, TENANT};
    use crate::b2bua::model::{GatewayModel, TenantModel, TenantTrunks};
    use crate::sip::transaction::TransportKind;
    use crate::sip::{HeaderName, Method};
    use crate::trunk::register::RegistrationStatus;
    use crate::trunk::{TrunkCredentials, TrunkModel, TrunkSecret};

    const REGISTRAR: &str = "127.0.0.4:5080";

    #[test]
    fn registration_status_is_queryable_and_shutdown_unregisters() {
        let mut h = Harness::new();
        h.core.set_model(&Arc::new(GatewayModel {
            tenants: vec![TenantModel {
                tenant: TENANT,
                dids: HashMap::new(),
                agents: vec![],
                media: Default::default(),
                trunks: TenantTrunks {
                    trunks: vec![TrunkModel {
                        name: "reg".into(),
                        host: "127.0.0.4".into(),
                        addresses: vec![REGISTRAR.parse().unwrap()],
                        transport: TransportKind::Udp,
                        credentials: Some(TrunkCredentials {
                            username: "acct".into(),
                            password: TrunkSecret::new("pw"),
                        }),
                        register: true,
                        max_channels: 0,
                    }],
                    did_trunks: HashMap::new(),
                },
            }],
        }));
        h.ms += 1;
        let now = h.now();
        h.core.handle_timeout(now);
        let out = h.out();
        let register = out
            .iter()
            .find(|(_, m)| m.method() == Some(&Method::Register))
            .unwrap()
            .1
            .clone();
        assert!(matches!(
            h.core.trunk_statuses()[0].registration,
            Some(RegistrationStatus::Registering)
        ));
        let mut ok = String::from("SIP/2.0 200 OK\n");
        for n in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            ok.push_str(&format!(
                "{}: {}\n",
                String::from_utf8_lossy(n.canonical()),
                String::from_utf8_lossy(register.headers_named(&n).next().unwrap())
            ));
        }
        ok.push_str("Expires: 300\nContent-Length: 0\n\n");
        h.send(REGISTRAR, &ok);
        assert!(matches!(
            h.core.trunk_statuses()[0].registration,
            Some(RegistrationStatus::Registered { expires: 300, .. })
        ));
        let now = h.now();
        h.core.unregister_trunks(now);
        let out = h.out();
        let bye = out
            .iter()
            .find(|(_, m)| m.method() == Some(&Method::Register))
            .unwrap();
        assert_eq!(bye.0.to_string(), REGISTRAR);
        assert_eq!(bye.1.expires().unwrap(), Some(0));
    }
}
