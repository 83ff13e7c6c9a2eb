//! softphone-web — the browser UI, embedded into the binary.
#![forbid(unsafe_code)]
