//! crm-api — zentrale's HTTP/WebSocket API and persistence.
#![forbid(unsafe_code)]
