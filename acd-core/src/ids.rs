//! Identifiers, time and channels: the small value types every other module speaks in.
//!
//! Configuration keys (`QueueId`, `AgentId`, `SkillId`) are strings (shared `Arc<str>`, so
//! the ids in every emitted action are a reference-count bump, not an allocation) because they are the
//! stable names an admin writes in TOML and crm-api stores (its UUIDs as text). Contact and
//! offer ids are UUIDs because they must be globally unique across nodes (DESIGN.md,
//! "Scaling out"). Inside the engine everything is interned to dense `u32` indices; these
//! types are only the public edge.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Creates the id from its configuration key.
            pub fn new(key: impl AsRef<str>) -> Self {
                Self(Arc::from(key.as_ref()))
            }

            /// The configuration key.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(key: &str) -> Self {
                Self(Arc::from(key))
            }
        }

        impl From<String> for $name {
            fn from(key: String) -> Self {
                Self(Arc::from(key))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// A deterministic id from a number, for tests and simulations (not a valid
            /// UUIDv7; production ids come from the shell).
            pub const fn from_u128(n: u128) -> Self {
                Self(Uuid::from_u128(n))
            }

            /// The UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

string_id!(
    /// A queue, by its configuration key.
    QueueId
);
string_id!(
    /// An agent, by its configuration key (crm-api uses the user's UUID as text).
    AgentId
);
string_id!(
    /// A skill, by its configuration key (e.g. `german`, `billing`).
    SkillId
);
uuid_id!(
    /// One contact (call, chat, mail, task). The shell creates it, as UUIDv7.
    ContactId
);
uuid_id!(
    /// One offer of a contact to an agent. The engine creates it deterministically from
    /// its seed and a counter, so a replay with the same seed yields the same ids.
    OfferId
);

/// A point in time: milliseconds since the Unix epoch (UTC).
///
/// The engine never reads a clock; every input carries `now`. Durations are plain `u64`
/// milliseconds (names end in `_ms`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The Unix epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `ms` milliseconds (saturating: time never wraps).
    #[must_use]
    pub const fn plus_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later (clocks given by
    /// the shell may step back a little; the engine must not underflow).
    pub const fn ms_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The medium of a contact. Capacity is counted per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone call (SIP or WebRTC).
    Voice,
    /// A web chat or messenger conversation.
    Chat,
    /// An e-mail.
    Email,
    /// Any other unit of work (a ticket, a back-office task).
    Task,
}

impl Channel {
    /// All channels, in index order.
    pub const ALL: [Channel; 4] = [Channel::Voice, Channel::Chat, Channel::Email, Channel::Task];

    /// Dense index for per-channel arrays.
    pub const fn index(self) -> usize {
        match self {
            Channel::Voice => 0,
            Channel::Chat => 1,
            Channel::Email => 2,
            Channel::Task => 3,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
            Channel::Task => "task",
        })
    }
}
