//! Newtype ids for every entity the API stores.
//!
//! All ids are UUIDv7: globally unique (a second node never repeats them, see DESIGN.md
//! "Scaling out") and ordered by creation time, so "ORDER BY id" is "ORDER BY time" and an id
//! doubles as a stable pagination cursor. They are stored as lowercase hyphenated TEXT in both
//! backends so that one SQL text serves SQLite and PostgreSQL.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// The stored (TEXT) form.
            pub fn as_text(&self) -> String {
                self.0.as_hyphenated().to_string()
            }
            /// Parses the stored or URL form; `None` for anything that is not a UUID.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }
    };
}

id_type!(
    /// A tenant (one customer organisation's project, "Mandant").
    TenantId
);
id_type!(
    /// A web/API login.
    UserId
);
id_type!(
    /// A service provider (outsourcing partner organisation) inside a tenant.
    ProviderId
);
id_type!(
    /// An API key of an integration.
    ApiKeyId
);
id_type!(
    /// A customer (the person or organisation on the other end of contacts).
    CustomerId
);
id_type!(
    /// One item on a customer's timeline (call, mail, chat, note, status change).
    InteractionId
);
id_type!(
    /// A ticket / conversation.
    TicketId
);
id_type!(
    /// A custom field definition ("data mask" field).
    FieldId
);

/// A UUIDv7 whose timestamp is `at`, so that rows ordered by id are ordered by `at` even when
/// they are recorded later than they happened (a CDR written after hang-up, a back-dated note).
///
/// Within one millisecond the ids of this process are ordered by creation: the 42 bits after
/// the timestamp (RFC 9562 "method 1", a fixed-length dedicated counter) hold a process-wide
/// counter, the last 32 bits are random so that several nodes never collide.
pub fn uuid_v7_at(at: chrono::DateTime<chrono::Utc>) -> Uuid {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Times before 1970 cannot be represented in a v7 id; they sort first.
    let ms = u128::try_from(at.timestamp_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let c = u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)) & ((1 << 42) - 1);
    let random = u128::from(rand::random::<u32>());
    Uuid::from_u128(
        (ms << 80)
            | (0x7 << 76)
            | ((c >> 30) << 64)
            | (0b10 << 62)
            | ((c & 0x3fff_ffff) << 32)
            | random,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_at_is_ordered_by_time_then_creation_and_valid() {
        let t = chrono::DateTime::from_timestamp_millis(1_800_000_000_123).expect("valid time");
        let a = uuid_v7_at(t);
        let b = uuid_v7_at(t);
        let earlier = uuid_v7_at(t - chrono::Duration::milliseconds(1));
        assert!(a < b);
        assert!(earlier < a);
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = a.get_timestamp().expect("v7 has a timestamp").to_unix();
        assert_eq!((secs, nanos), (1_800_000_000, 123_000_000));
        assert!(a.as_hyphenated().to_string() < b.as_hyphenated().to_string());
    }
}
