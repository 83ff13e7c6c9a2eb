//! The retention sweep of call recordings: deletes recordings older than their queue's
//! `media.recording_retention_days`, at start and then hourly.
//!
//! Recordings lie at `<data_dir>/recordings/<tenant>/<yyyy-mm-dd>/<contact>.wav` (the day the
//! recording started, UTC; sip-gateway's `b2bua::recording_path`). The file name is the contact
//! id, and the queue of a contact is in its CDR, so the sweep reads, per tenant directory, the
//! tenant's routing model (retention per queue) and the queues of its recorded calls, then
//! decides file by file. A file whose queue is unknown — its CDR not written yet, or lost in
//! a crash — gets the longest retention of the tenant's queues, so nothing is deleted earlier
//! than any rule allows. `0` days keeps a queue's recordings forever.
//!
//! Deleting is I/O, so this lives in the binary, not in the sans-IO gateway core; "now" is an
//! argument so the tests decide what day it is. Emptied day directories are removed too.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use acd_core::config::QueueMedia;
use chrono::{DateTime, NaiveDate, Utc};
use crm_api::Store;
use crm_api::ids::TenantId;
use crm_api::routing::RoutingModel;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Files deleted.
    pub deleted: usize,
    /// Files kept.
    pub kept: usize,
    /// Files or directories that could not be read or deleted (logged).
    pub failed: usize,
}

/// Days to keep per queue of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Retention {
    per_queue: HashMap<String, u32>,
    /// For queues without media configuration.
    default: u32,
}

impl Retention {
    fn of(model: &RoutingModel) -> Retention {
        let default = QueueMedia::default().recording_retention_days;
        let per_queue = model
            .queues
            .iter()
            .map(|(id, q)| {
                let days = q
                    .media
                    .as_ref()
                    .map_or(default, |m| m.recording_retention_days);
                (id.to_string(), days)
            })
            .collect();
        Retention { per_queue, default }
    }

    /// Days to keep a recording of `queue`; `0` = forever. Unknown queue: the longest rule.
    fn days(&self, queue: Option<&str>) -> u32 {
        match queue.and_then(|q| self.per_queue.get(q)) {
            Some(&d) => d,
            None => {
                if self.per_queue.values().any(|&d| d == 0) {
                    0
                } else {
                    self.per_queue
                        .values()
                        .copied()
                        .chain([self.default])
                        .max()
                        .unwrap_or(self.default)
                }
            }
        }
    }
}

/// Whether a recording started on `day` is past `days` of retention on `today`.
fn expired(day: NaiveDate, today: NaiveDate, days: u32) -> bool {
    days > 0 && (today - day).num_days() > i64::from(days)
}

/// One pass over `dir` (the recordings directory) as of `now`.
pub async fn sweep(store: &Store, dir: &Path, now: DateTime<Utc>) -> SweepReport {
    let mut report = SweepReport::default();
    let today = now.date_naive();
    let Ok(tenants) = std::fs::read_dir(dir) else {
        // No recordings yet.
        return report;
    };
    for tenant_dir in tenants.flatten() {
        let name = tenant_dir.file_name().to_string_lossy().into_owned();
        let Some(tenant) = TenantId::parse(&name) else {
            tracing::warn!(dir = %tenant_dir.path().display(), "not a tenant's recordings; left alone");
            continue;
        };
        let model = match crm_api::routing::load_model(store, tenant).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(%name, "recording retention: cannot load the routing model: {e}");
                report.failed += 1;
                continue;
            }
        };
        let retention = Retention::of(&model);
        let queues: HashMap<String, Option<String>> =
            match crm_api::calls::recorded_queues(store, tenant).await {
                Ok(rows) => rows.into_iter().collect(),
                Err(e) => {
                    tracing::error!(%name, "recording retention: cannot read CDRs: {e}");
                    report.failed += 1;
                    continue;
                }
            };
        let Ok(days) = std::fs::read_dir(tenant_dir.path()) else {
            report.failed += 1;
            continue;
        };
        for day_dir in days.flatten() {
            let day_name = day_dir.file_name().to_string_lossy().into_owned();
            let Ok(day) = NaiveDate::parse_from_str(&day_name, "%Y-%m-%d") else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(day_dir.path()) else {
                report.failed += 1;
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                // `<contact>.wav`, or `<contact>.<n>.wav` for a recording started again.
                let contact = path
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .and_then(|n| n.split('.').next().map(str::to_owned))
                    .unwrap_or_default();
                let queue = queues.get(&contact).and_then(|q| q.as_deref());
                if expired(day, today, retention.days(queue)) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => report.deleted += 1,
                        Err(e) => {
                            tracing::error!(path = %path.display(), "cannot delete an expired recording: {e}");
                            report.failed += 1;
                        }
                    }
                } else {
                    report.kept += 1;
                }
            }
            // Only succeeds when the day is now empty.
            let _ = std::fs::remove_dir(day_dir.path());
        }
    }
    report
}

/// Sweeps at start and then every hour, until the process ends.
pub async fn run(store: Store, dir: std::path::PathBuf) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let report = sweep(&store, &dir, Utc::now()).await;
        if report.deleted > 0 || report.failed > 0 {
            tracing::info!(
                deleted = report.deleted,
                kept = report.kept,
                failed = report.failed,
                "recording retention sweep"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn cdr(
        tenant: TenantId,
        contact: &str,
        queue: &str,
        path: &Path,
    ) -> crm_api::customers::CdrRecord {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        crm_api::customers::CdrRecord {
            tenant,
            contact_id: contact.to_owned(),
            leg: "caller".to_owned(),
            direction: "inbound".to_owned(),
            started_at: t,
            answered_at: Some(t),
            ended_at: t,
            caller: "+4930111".to_owned(),
            callee: "100".to_owned(),
            result: "answered".to_owned(),
            queue: Some(queue.to_owned()),
            agent: Some("1001".to_owned()),
            wait_ms: 0,
            talk_ms: 1000,
            wrap_ms: 0,
            recording: Some(path.display().to_string()),
            quality: serde_json::json!({}),
            mos_x100: None,
            recording_ms: Some(1000),
            voicemail: None,
            transfer: None,
        }
    }

    #[test]
    fn retention_per_queue_and_the_longest_rule_for_unknown_files() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        assert!(expired(day, today, 29));
        assert!(!expired(day, today, 30), "the 30th day is still kept");
        assert!(!expired(day, today, 0), "0 keeps forever");
        let r = Retention {
            per_queue: HashMap::from([("a".into(), 7), ("b".into(), 30)]),
            default: 90,
        };
        assert_eq!(r.days(Some("a")), 7);
        assert_eq!(r.days(None), 90, "an unknown file gets the longest rule");
        let forever = Retention {
            per_queue: HashMap::from([("a".into(), 0)]),
            default: 90,
        };
        assert_eq!(forever.days(Some("gone")), 0);
    }

    #[tokio::test]
    async fn sweep_deletes_what_its_queue_no_longer_keeps() {
        let root = std::env::temp_dir().join(format!("zentrale-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let tenant = store.create_tenant("t", "T", now).await.unwrap();
        crm_api::provision::apply(
            &store,
            tenant,
            "[queues.short.media]\nrecording_retention_days = 7\n[queues.long.media]\nrecording_retention_days = 365\n",
        )
        .await
        .unwrap();
        let dir = root.join("recordings");
        let file = |day: &str, contact: &str| {
            let d = dir.join(tenant.0.hyphenated().to_string()).join(day);
            std::fs::create_dir_all(&d).unwrap();
            let p = d.join(format!("{contact}.wav"));
            std::fs::write(&p, b"RIFF").unwrap();
            p
        };
        // 10 days old: gone for the 7-day queue, kept for the 1-year queue.
        let short_old = file("2026-02-19", "c-short-old");
        let short_old_2 = file("2026-02-19", "c-short-old.2");
        let long_old = file("2026-02-19", "c-long-old");
        // 3 days old: kept.
        let short_new = file("2026-02-26", "c-short-new");
        // No CDR (still running or lost): the longest rule, 365 days, keeps it.
        let orphan = file("2026-02-19", "c-orphan");
        // 400 days old without a CDR: past every rule.
        let ancient = file("2025-01-25", "c-ancient");
        let other = dir.join("not-a-tenant");
        std::fs::create_dir_all(&other).unwrap();
        for (contact, queue, path) in [
            ("c-short-old", "short", &short_old),
            ("c-long-old", "long", &long_old),
            ("c-short-new", "short", &short_new),
        ] {
            store
                .insert_cdr(&cdr(tenant, contact, queue, path))
                .await
                .unwrap();
        }

        let report = sweep(&store, &dir, now).await;
        assert_eq!(
            report,
            SweepReport {
                deleted: 3,
                kept: 3,
                failed: 0
            }
        );
        assert!(!short_old.exists() && !short_old_2.exists());
        assert!(!ancient.exists());
        assert!(
            !ancient.parent().unwrap().exists(),
            "the emptied day is removed"
        );
        assert!(long_old.exists() && short_new.exists() && orphan.exists());
        assert!(other.exists(), "foreign directories are left alone");
        // Idempotent.
        assert_eq!(sweep(&store, &dir, now).await.deleted, 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}
