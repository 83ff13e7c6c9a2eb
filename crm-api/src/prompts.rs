//! Tenants' own prompts and music: `PUT/GET/DELETE /api/v1/prompts/{language}/{name}` with a
//! WAV body, and `GET /api/v1/prompts` (the list with duration, sample rate and size).
//!
//! # What is accepted
//!
//! PCM, 16-bit, mono or stereo, 8, 16 or 48 kHz, at most [`MAX_DURATION_MS`] long and
//! [`MAX_BYTES`] big. Stereo is accepted and down-mixed by the gateway when it loads the file
//! (the average of both channels, `sip_gateway::audio::wav`), because every audio tool exports
//! stereo by default and refusing it would only annoy. Other rates (44.1 kHz, 22.05 kHz …),
//! other sample sizes (8, 24, 32 bit, float) and compressed formats are refused with a message
//! naming the field (`sample_rate`, `bits_per_sample`, `format`): the gateway *could* convert
//! some of them, but the issue promises 8/16/48 kHz PCM and a clear refusal is easier to
//! support than a silently resampled surprise. crm-api checks the header itself (a few dozen
//! lines of RIFF parsing) rather than depending on sip-gateway (DESIGN.md: the two crates never
//! depend on each other).
//!
//! # Where it is stored, and why files
//!
//! `<data_dir>/prompts/tenants/<tenant-id>/<language>/<name>.wav`, the original bytes as
//! uploaded. Files rather than database rows because the gateway already loads prompt
//! directories (`PromptLibrary::load_dir`, the operator's overrides live in
//! `<data_dir>/prompts/<language>/`), prompts are megabytes of audio that have no business in
//! every database backup and in PostgreSQL's WAL, and the recordings already live next to them.
//! The tenant id in the path (a UUID from the principal, never from the request) isolates
//! tenants; language and name are validated against `[a-z]{2}` and `[a-z0-9_-]{1,64}`, so no
//! request can name a path outside its directory.
//!
//! A crash must never leave a half-written prompt visible: the body is written to a hidden
//! temporary file in the same directory (`.<name>.wav.tmp-<uuid>`, which no loader reads since
//! it does not end in `.wav`), synced, and renamed over the target (atomic on POSIX), then the
//! directory is synced. A leftover temporary file after a crash is harmless.
//!
//! # Live use
//!
//! After every successful upload or delete the tenant id is published on
//! [`AppState::subscribe_prompts`]; the binary reloads that tenant's directory off the SIP task
//! and hands the gateway the new per-tenant prompt set with the next model, so a call started
//! after the response hears the new audio (lookup order there: the tenant's upload, then the
//! operator's override, then the built-in prompt). Routing validation checks prompt names
//! only for syntax, so a queue may name `music = "my_music"` before or after the upload.
//!
//! # Rights
//!
//! Admins upload and delete (`routing:write`); supervisors may list and fetch (`routing:read`);
//! agents get `403`. Service providers' users are refused like for SIP credentials: prompts are
//! the tenant's own. Every change is audit-logged (entity `prompt`, id `<language>/<name>`,
//! with the audio's description before/after, never the audio).

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Perm, Principal};
use crate::error::ApiError;
use crate::ids::TenantId;
use crate::state::AppState;

/// Largest accepted upload: 10 minutes of 16 kHz mono (19.2 MB) fit; 48 kHz stereo is
/// bounded by this rather than by the duration.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Longest accepted prompt or music, ms (10 minutes).
pub const MAX_DURATION_MS: u64 = 10 * 60 * 1000;
/// The accepted sample rates.
pub const RATES: [u32; 3] = [8_000, 16_000, 48_000];

/// One stored prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptInfo {
    /// Two-letter language (`de`, `en`).
    pub language: String,
    /// The name queues and menus use (`my_music`).
    pub name: String,
    /// Length, ms.
    pub duration_ms: u64,
    /// Sample rate of the upload, Hz.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo, down-mixed when played).
    pub channels: u16,
    /// File size, bytes.
    pub size_bytes: u64,
}

/// `GET /api/v1/prompts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PromptList {
    /// The tenant's prompts, by language then name.
    pub items: Vec<PromptInfo>,
}

/// The format of a WAV file, as far as this module checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Hz.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u16,
    /// Length, ms.
    pub duration_ms: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks that `bytes` is a WAV file zentrale accepts; the error names the field at fault
/// (`body`, `format`, `bits_per_sample`, `channels`, `sample_rate`, `duration`).
pub fn inspect_wav(bytes: &[u8]) -> Result<WavFormat, ApiError> {
    let bad = |field: &str, msg: String| ApiError::validation(field, msg);
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad(
            "body",
            "not a WAV file (no RIFF/WAVE header); upload 16-bit PCM WAV".into(),
        ));
    }
    let mut pos = 12usize;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = le32(bytes, pos + 4) as usize;
        let start = pos + 8;
        let end = start.checked_add(size).filter(|e| *e <= bytes.len());
        match id {
            b"fmt " => {
                let Some(end) = end.filter(|_| size >= 16) else {
                    return Err(bad("body", "WAV fmt chunk is truncated".into()));
                };
                let c = &bytes[start..end];
                let mut tag = le16(c, 0);
                if tag == 0xFFFE && c.len() >= 26 {
                    // WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID's first word.
                    tag = le16(c, 24);
                }
                fmt = Some((tag, le16(c, 2), le32(c, 4), le16(c, 14)));
            }
            b"data" => {
                let Some((tag, channels, rate, bits)) = fmt else {
                    return Err(bad("body", "WAV data chunk before its fmt chunk".into()));
                };
                if tag != 1 {
                    return Err(bad(
                        "format",
                        format!(
                            "only PCM audio is accepted (this file has format tag {tag:#06x}, e.g. float or compressed)"
                        ),
                    ));
                }
                if bits != 16 {
                    return Err(bad(
                        "bits_per_sample",
                        format!("{bits}-bit samples are not accepted; export 16-bit PCM"),
                    ));
                }
                if !(1..=2).contains(&channels) {
                    return Err(bad(
                        "channels",
                        format!(
                            "{channels} channels are not accepted; mono or stereo (down-mixed)"
                        ),
                    ));
                }
                if !RATES.contains(&rate) {
                    return Err(bad(
                        "sample_rate",
                        format!("{rate} Hz is not accepted; use 8000, 16000 or 48000 Hz"),
                    ));
                }
                if end.is_none() {
                    return Err(bad("body", "WAV data chunk is truncated".into()));
                }
                let frames = size as u64 / (u64::from(channels) * 2);
                let duration_ms = frames * 1000 / u64::from(rate);
                if frames == 0 {
                    return Err(bad("duration", "the audio is empty".into()));
                }
                if duration_ms > MAX_DURATION_MS {
                    return Err(bad(
                        "duration",
                        format!(
                            "the audio is {} s long; at most {} s accepted",
                            duration_ms / 1000,
                            MAX_DURATION_MS / 1000
                        ),
                    ));
                }
                return Ok(WavFormat {
                    sample_rate: rate,
                    channels,
                    duration_ms,
                });
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos = match start.checked_add(size + (size & 1)) {
            Some(p) => p,
            None => break,
        };
    }
    Err(bad("body", "WAV file has no data chunk".into()))
}

fn valid_language(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_lowercase())
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_path(language: &str, name: &str) -> Result<(), ApiError> {
    if !valid_language(language) {
        return Err(ApiError::validation(
            "language",
            "a language is two lower-case letters (de, en)",
        ));
    }
    if !valid_name(name) {
        return Err(ApiError::validation(
            "name",
            "a prompt name is 1-64 of a-z, 0-9, _ and - (without .wav)",
        ));
    }
    Ok(())
}

/// The directory of a tenant's uploads: `<data_dir>/prompts/tenants/<tenant-id>`.
pub fn tenant_dir(data_dir: &Path, tenant: TenantId) -> PathBuf {
    data_dir
        .join("prompts")
        .join("tenants")
        .join(tenant.0.as_hyphenated().to_string())
}

fn data_dir(state: &AppState) -> Result<PathBuf, ApiError> {
    state.data_dir().map(Path::to_path_buf).ok_or_else(|| {
        tracing::warn!("prompt request on a node without a data directory");
        ApiError::Unavailable
    })
}

fn require_tenant(who: &Principal, perm: Perm) -> Result<(), ApiError> {
    who.require(perm)?;
    if who.release.is_some() {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    tracing::error!(path = %path.display(), "prompt {what} failed: {e}");
    ApiError::Unavailable
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("prompt task failed: {e}");
        ApiError::Unavailable
    })?
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, sync, rename,
/// directory sync.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("prompt.wav");
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn describe(language: &str, name: &str, bytes: &[u8]) -> Option<PromptInfo> {
    let f = inspect_wav(bytes).ok()?;
    Some(PromptInfo {
        language: language.to_owned(),
        name: name.to_owned(),
        duration_ms: f.duration_ms,
        sample_rate: f.sample_rate,
        channels: f.channels,
        size_bytes: bytes.len() as u64,
    })
}

fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, ApiError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

/// Every prompt of a tenant directory, sorted by language and name (unreadable files are
/// skipped with a log line).
pub fn list_dir(dir: &Path) -> Vec<PromptInfo> {
    let mut items = Vec::new();
    let Ok(langs) = std::fs::read_dir(dir) else {
        return items;
    };
    for lang in langs.flatten() {
        let Some(language) = lang.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !valid_language(&language) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(lang.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wav") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if !valid_name(name) {
                continue;
            }
            match std::fs::read(&path).map(|b| describe(&language, name, &b)) {
                Ok(Some(info)) => items.push(info),
                Ok(None) => {
                    tracing::warn!(path = %path.display(), "stored prompt is not a valid WAV")
                }
                Err(e) => tracing::warn!(path = %path.display(), "stored prompt unreadable: {e}"),
            }
        }
    }
    items.sort_by(|a, b| (&a.language, &a.name).cmp(&(&b.language, &b.name)));
    items
}

/// The tenant's prompts.
#[utoipa::path(get, path = "/api/v1/prompts", tag = "prompts",
    responses((status = 200, body = PromptList), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_prompts(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<PromptList>, ApiError> {
    require_tenant(&who, Perm::RoutingRead)?;
    let dir = tenant_dir(&data_dir(&state)?, who.tenant);
    let items = blocking(move || Ok(list_dir(&dir))).await?;
    Ok(axum::Json(PromptList { items }))
}

/// One prompt's audio (`audio/wav`, as uploaded).
#[utoipa::path(get, path = "/api/v1/prompts/{language}/{name}", tag = "prompts",
    params(("language" = String, Path, description = "two-letter language"),
           ("name" = String, Path, description = "prompt name")),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_prompt(
    State(state): State<AppState>,
    who: Principal,
    UrlPath((language, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    require_tenant(&who, Perm::RoutingRead)?;
    check_path(&language, &name)?;
    let path = tenant_dir(&data_dir(&state)?, who.tenant)
        .join(&language)
        .join(format!("{name}.wav"));
    let bytes = blocking(move || read_existing(&path))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response())
}

/// Uploads (or replaces) a prompt: the body is the WAV file.
#[utoipa::path(put, path = "/api/v1/prompts/{language}/{name}", tag = "prompts",
    params(("language" = String, Path, description = "two-letter language"),
           ("name" = String, Path, description = "prompt name, [a-z0-9_-]{1,64}")),
    request_body(content = Vec<u8>, content_type = "audio/wav",
        description = "16-bit PCM WAV, mono or stereo, 8/16/48 kHz, at most 10 minutes and 32 MiB"),
    responses((status = 200, body = PromptInfo), (status = 201, body = PromptInfo),
        (status = 403, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_prompt(
    State(state): State<AppState>,
    who: Principal,
    UrlPath((language, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<PromptInfo>), ApiError> {
    require_tenant(&who, Perm::RoutingWrite)?;
    check_path(&language, &name)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        ctype.as_str(),
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave"
    ) {
        return Err(ApiError::validation(
            "content-type",
            "expected content-type audio/wav",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let format = inspect_wav(&bytes)?;
    let dir = data_dir(&state)?;
    let path = tenant_dir(&dir, who.tenant)
        .join(&language)
        .join(format!("{name}.wav"));
    let info = PromptInfo {
        language: language.clone(),
        name: name.clone(),
        duration_ms: format.duration_ms,
        sample_rate: format.sample_rate,
        channels: format.channels,
        size_bytes: bytes.len() as u64,
    };
    let (l, n) = (language.clone(), name.clone());
    let before = blocking(move || {
        let before = read_existing(&path)?.and_then(|b| describe(&l, &n, &b));
        write_atomically(&path, &bytes).map_err(|e| io_error("write", &path, e))?;
        Ok(before)
    })
    .await?;
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    state
        .audit(
            &who,
            "prompt",
            &format!("{language}/{name}"),
            if before.is_some() { "update" } else { "create" },
            before.map(|b| serde_json::json!(b)),
            Some(serde_json::json!(info)),
        )
        .await?;
    state.publish_prompts(who.tenant);
    Ok((status, axum::Json(info)))
}

/// Deletes a prompt (calls fall back to the operator's or the built-in prompt of that name).
#[utoipa::path(delete, path = "/api/v1/prompts/{language}/{name}", tag = "prompts",
    params(("language" = String, Path, description = "two-letter language"),
           ("name" = String, Path, description = "prompt name")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_prompt(
    State(state): State<AppState>,
    who: Principal,
    UrlPath((language, name)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_tenant(&who, Perm::RoutingWrite)?;
    check_path(&language, &name)?;
    let path = tenant_dir(&data_dir(&state)?, who.tenant)
        .join(&language)
        .join(format!("{name}.wav"));
    let (l, n) = (language.clone(), name.clone());
    let before = blocking(move || {
        let Some(bytes) = read_existing(&path)? else {
            return Err(ApiError::NotFound);
        };
        std::fs::remove_file(&path).map_err(|e| io_error("delete", &path, e))?;
        Ok(describe(&l, &n, &bytes))
    })
    .await?;
    state
        .audit(
            &who,
            "prompt",
            &format!("{language}/{name}"),
            "delete",
            before.map(|b| serde_json::json!(b)),
            None,
        )
        .await?;
    state.publish_prompts(who.tenant);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn wav(rate: u32, channels: u16, bits: u16, tag: u16, frames: u32) -> Vec<u8> {
        let block = u32::from(channels) * u32::from(bits / 8);
        let data = frames * block;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * block).to_le_bytes());
        b.extend_from_slice(&(block as u16).to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        b.resize(b.len() + data as usize, 0);
        b
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::Validation { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn accepts_16_bit_pcm_at_8_16_48_khz_mono_and_stereo() {
        for rate in RATES {
            let f = inspect_wav(&wav(rate, 1, 16, 1, rate / 2)).unwrap();
            assert_eq!((f.sample_rate, f.channels, f.duration_ms), (rate, 1, 500));
            let f = inspect_wav(&wav(rate, 2, 16, 1, rate)).unwrap();
            assert_eq!((f.channels, f.duration_ms), (2, 1000));
        }
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            field(inspect_wav(&wav(44_100, 1, 16, 1, 100)).unwrap_err()),
            "sample_rate"
        );
        assert_eq!(
            field(inspect_wav(&wav(8000, 1, 8, 1, 100)).unwrap_err()),
            "bits_per_sample"
        );
        assert_eq!(
            field(inspect_wav(&wav(8000, 1, 32, 3, 100)).unwrap_err()),
            "format"
        );
        assert_eq!(
            field(inspect_wav(&wav(8000, 3, 16, 1, 100)).unwrap_err()),
            "channels"
        );
        assert_eq!(
            field(inspect_wav(&wav(8000, 1, 16, 1, 0)).unwrap_err()),
            "duration"
        );
        assert_eq!(
            field(inspect_wav(&wav(8000, 1, 16, 1, 8000 * 601)).unwrap_err()),
            "duration"
        );
        assert_eq!(field(inspect_wav(b"garbage").unwrap_err()), "body");
        let mut cut = wav(8000, 1, 16, 1, 100);
        cut.truncate(100);
        assert_eq!(field(inspect_wav(&cut).unwrap_err()), "body");
        // Hostile chunk sizes never panic.
        let mut huge = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(field(inspect_wav(&huge).unwrap_err()), "body");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_path("de", "my_music-2").is_ok());
        assert_eq!(field(check_path("deu", "x").unwrap_err()), "language");
        assert_eq!(field(check_path("de", "../x").unwrap_err()), "name");
        assert_eq!(field(check_path("de", "x.wav").unwrap_err()), "name");
        assert_eq!(
            field(check_path("de", &"a".repeat(65)).unwrap_err()),
            "name"
        );
    }

    #[test]
    fn atomic_write_leaves_only_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("de").join("x.wav");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("de"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.wav")]);
    }
}
