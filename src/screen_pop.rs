//! Screen pop on answer: the moment an agent accepts a voice contact, crm-api pushes the
//! customer card, the latest timeline items and what the caller entered in the IVR to that
//! agent's `/api/v1/events` sockets.
//!
//! The SIP gateway and crm-api never meet (DESIGN.md), so the binary joins what each side
//! knows: the engine's `Offer`/`DialCallback` actions say which agent an offer went to, the
//! gateway's routing inputs carry the contact's attributes (caller number, IVR choices and
//! collected digits) and the acceptance. This task keeps the small maps that join them and
//! forgets a contact when it ends, so it holds only what is in progress.
//!
//! A contact handed straight to an agent's phone (a blind transfer to an agent, an attended
//! transfer) reaches the new agent without an offer: the engine's `Assigned` action, emitted
//! once it has made that agent the contact's owner, pops the same card to the new agent.

use std::collections::{BTreeMap, HashMap};

use acd_core::{Action, AgentId, Channel, ContactId, Input, OfferId};
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
    /// The card of `contact` for `agent`.
    fn pop(&self, tenant: TenantId, contact: ContactId, agent: &AgentId) -> Pop {
        let attributes = self.contacts.get(&contact).cloned().unwrap_or_default();
        Pop {
            tenant,
            agent: agent.as_str().to_owned(),
            contact,
            caller: attributes.get("caller").cloned().unwrap_or_default(),
            attributes,
        }
    }

    fn action(&mut self, tenant: TenantId, action: &Action) -> Option<Pop> {
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
            Action::Assigned {
                contact,
                agent,
                channel: Channel::Voice,
                ..
            } => return Some(self.pop(tenant, *contact, agent)),
            _ => {}
        }
        None
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
                Some(self.pop(tenant, contact, &agent))
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
                Ok((tenant, action)) => {
                    if let Some(pop) = pending.action(tenant, &action) {
                        send(&state, pop);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("screen pop missed {n} routing actions; some pops may be lost");
                }
                Err(broadcast::error::RecvError::Closed) => actions_open = false,
            },
            i = inputs.recv() => match i {
                Some((tenant, input)) => {
                    if let Some(pop) = pending.input(tenant, &input) {
                        send(&state, pop);
                    }
                }
                None => return,
            },
        }
    }
}

/// Pushes one pop to the agent's event sockets, in the background.
fn send(state: &crm_api::AppState, pop: Pop) {
    let state = state.clone();
    tokio::spawn(async move {
        let contact = pop.contact.to_string();
        if let Err(e) = state
            .screen_pop_with(
                pop.tenant,
                &pop.agent,
                &pop.caller,
                &contact,
                pop.attributes,
            )
            .await
        {
            tracing::warn!(agent = pop.agent, "screen pop failed: {e}");
        }
    });
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
            p.action(
                tenant,
                &Action::Offer {
                    offer,
                    contact,
                    agent: AgentId::new(agent),
                    queue: QueueId::new("support"),
                    channel: Channel::Voice,
                    expires_at: acd_core::Timestamp(0),
                },
            );
        }
        p.action(
            tenant,
            &Action::CancelOffer {
                offer: o1,
                contact,
                agent: AgentId::new("1001"),
                reason: acd_core::io::CancelReason::Timeout,
            },
        );
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

    #[test]
    fn an_assignment_pops_the_card_to_the_new_agent_and_keeps_it_until_the_end() {
        let mut p = Pending::default();
        let tenant = TenantId(sip_gateway::gateway::Uuid::from_u128(1));
        let contact = ContactId::from_u128(8);
        let mut new = NewContact::new(contact, QueueId::new("support"), Channel::Voice);
        new.attributes.insert("caller".into(), "+4930999".into());
        p.input(tenant, &Input::NewContact(new));
        let assigned = |agent: &str| Action::Assigned {
            contact,
            agent: AgentId::new(agent),
            queue: QueueId::new("support"),
            channel: Channel::Voice,
            from: Some(AgentId::new("1001")),
        };
        // The gateway's input alone pops nothing: the engine may refuse it.
        let input = Input::AssignToAgent {
            contact,
            agent: AgentId::new("1002"),
        };
        assert_eq!(p.input(tenant, &input), None);
        let pop = p.action(tenant, &assigned("1002")).unwrap();
        assert_eq!(
            (pop.agent.as_str(), pop.caller.as_str()),
            ("1002", "+4930999")
        );
        // Transferred on again: the next agent gets the same card.
        let pop = p.action(tenant, &assigned("1003")).unwrap();
        assert_eq!((pop.agent.as_str(), pop.contact), ("1003", contact));
        p.input(tenant, &Input::ContactEnded { contact });
        assert!(p.contacts.is_empty());
    }
}
