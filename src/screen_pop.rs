//! Screen pop on answer: the moment an agent accepts a voice contact, crm-api pushes the
//! customer card, the latest timeline items and what the caller entered in the IVR to that
//! agent's `/api/v1/events` sockets.
//!
//! The SIP gateway and crm-api never meet (DESIGN.md), so the binary joins what each side
//! knows: the engine's `Offer`/`DialCallback` actions say which agent an offer went to, the
//! gateway's routing inputs carry the contact's attributes (caller number, IVR choices and
//! collected digits) and the acceptance. This task keeps the small maps that join them and
//! forgets a contact when it ends, so it holds only what is in progress.

use std::collections::{BTreeMap, HashMap};

use acd_core::{Action, AgentId, ContactId, Input, OfferId};
use crm_api::ids::TenantId;
use tokio::sync::{broadcast, mpsc};

/// What the joins remember.
#[derive(Default)]
struct Pending {
    /// Offer → (contact, agent), from the engine's actions.
    offers: HashMap<OfferId, (ContactId, AgentId)>,
    /// Contact → its attributes, from the gateway's `NewContact`.
    contacts: HashMap<ContactId, BTreeMap<String, String>>,
}

/// What to pop, and to whom.
#[derive(Debug, PartialEq)]
struct Pop {
    tenant: TenantId,
    agent: String,
    contact: ContactId,
    caller: String,
    attributes: BTreeMap<String, String>,
}

impl Pending {
    fn action(&mut self, action: &Action) {
        match action {
            Action::Offer {
                offer,
                contact,
                agent,
                ..
            }
            | Action::DialCallback {
                offer,
                contact,
                agent,
                ..
            } => {
                self.offers.insert(*offer, (*contact, agent.clone()));
            }
            Action::CancelOffer { offer, .. } => {
                self.offers.remove(offer);
            }
            _ => {}
        }
    }

    fn input(&mut self, tenant: TenantId, input: &Input) -> Option<Pop> {
        match input {
            Input::NewContact(new) => {
                self.contacts.insert(new.id, new.attributes.clone());
                None
            }
            Input::OfferRejected { offer, .. } => {
                self.offers.remove(offer);
                None
            }
            Input::ContactEnded { contact } => {
                self.contacts.remove(contact);
                self.offers.retain(|_, (c, _)| c != contact);
                None
            }
            Input::OfferAccepted { offer } => {
                let (contact, agent) = self.offers.remove(offer)?;
                let attributes = self.contacts.get(&contact).cloned().unwrap_or_default();
                Some(Pop {
                    tenant,
                    agent: agent.as_str().to_owned(),
                    contact,
                    caller: attributes.get("caller").cloned().unwrap_or_default(),
                    attributes,
                })
            }
            _ => None,
        }
    }
}

/// Runs until both sources close. `inputs` is a copy of what the gateway sends the engines.
pub async fn run(
    state: crm_api::AppState,
    mut actions: broadcast::Receiver<(TenantId, Action)>,
    mut inputs: mpsc::UnboundedReceiver<(TenantId, Input)>,
) {
    let mut pending = Pending::default();
    let mut actions_open = true;
    loop {
        tokio::select! {
            // Actions first: an offer is always emitted before the phone can accept it.
            biased;
            a = actions.recv(), if actions_open => match a {
                Ok((_, action)) => pending.action(&action),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("screen pop missed {n} routing actions; some pops may be lost");
                }
                Err(broadcast::error::RecvError::Closed) => actions_open = false,
            },
            i = inputs.recv() => match i {
                Some((tenant, input)) => {
                    if let Some(pop) = pending.input(tenant, &input) {
                        let state = state.clone();
                        tokio::spawn(async move {
                            let contact = pop.contact.to_string();
                            if let Err(e) = state
                                .screen_pop_with(pop.tenant, &pop.agent, &pop.caller, &contact, pop.attributes)
                                .await
                            {
                                tracing::warn!(agent = pop.agent, "screen pop failed: {e}");
                            }
                        });
                    }
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acd_core::{Channel, NewContact, QueueId};

    #[test]
    fn an_accepted_offer_pops_the_contacts_attributes_to_its_agent_and_ended_contacts_are_forgotten()
     {
        let mut p = Pending::default();
        let tenant = TenantId(sip_gateway::gateway::Uuid::from_u128(1));
        let contact = ContactId::from_u128(7);
        let mut new = NewContact::new(contact, QueueId::new("support"), Channel::Voice);
        new.attributes.insert("caller".into(), "+4930123".into());
        new.attributes
            .insert("customer_number".into(), "4711".into());
        assert_eq!(p.input(tenant, &Input::NewContact(new)), None);
        let (o1, o2) = (OfferId::from_u128(1), OfferId::from_u128(2));
        // The first offer is withdrawn (no answer); the second is accepted.
        for (offer, agent) in [(o1, "1001"), (o2, "1002")] {
            p.action(&Action::Offer {
                offer,
                contact,
                agent: AgentId::new(agent),
                queue: QueueId::new("support"),
                channel: Channel::Voice,
                expires_at: acd_core::Timestamp(0),
            });
        }
        p.action(&Action::CancelOffer {
            offer: o1,
            contact,
            agent: AgentId::new("1001"),
            reason: acd_core::io::CancelReason::Timeout,
        });
        assert_eq!(p.input(tenant, &Input::OfferAccepted { offer: o1 }), None);
        let pop = p
            .input(tenant, &Input::OfferAccepted { offer: o2 })
            .unwrap();
        assert_eq!(pop.agent, "1002");
        assert_eq!(pop.caller, "+4930123");
        assert_eq!(pop.attributes["customer_number"], "4711");
        p.input(tenant, &Input::ContactEnded { contact });
        assert!(p.contacts.is_empty() && p.offers.is_empty());
    }
}
