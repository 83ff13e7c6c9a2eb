-- zentrale crm-api schema (PostgreSQL). Ids are UUIDv7 as TEXT so that the SQLite and
-- PostgreSQL schemas share every query and ordering by id is ordering by creation time.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- bumped by every routing change; the first write of the change's transaction, so it
    -- also serialises concurrent routing changes of a tenant on both backends
    routing_version BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE service_providers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    released_queues JSONB NOT NULL,
    released_functions JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    provider_id TEXT REFERENCES service_providers(id),
    agent TEXT,
    totp_secret TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, username)
);
CREATE INDEX users_username ON users(username);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scopes JSONB NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE custom_field_defs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    key TEXT NOT NULL,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    required BOOLEAN NOT NULL,
    options JSONB NOT NULL,
    UNIQUE (tenant_id, key)
);

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    company TEXT,
    custom JSONB NOT NULL,
    merged_into TEXT REFERENCES customers(id),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX customers_tenant ON customers(tenant_id, id);

CREATE TABLE customer_identities (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (tenant_id, kind, value)
);
CREATE INDEX customer_identities_customer ON customer_identities(customer_id);

CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    assignee TEXT REFERENCES users(id),
    team TEXT,
    tags JSONB NOT NULL,
    due_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX tickets_tenant ON tickets(tenant_id, id);
CREATE INDEX tickets_customer ON tickets(customer_id);

CREATE TABLE interactions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    ticket_id TEXT REFERENCES tickets(id),
    contact_id TEXT,
    queue TEXT,
    agent TEXT,
    direction TEXT,
    wait_s BIGINT,
    talk_s BIGINT,
    wrap_s BIGINT,
    wrapup_code TEXT,
    recording TEXT,
    quality DOUBLE PRECISION,
    subject TEXT,
    body TEXT,
    created_by TEXT NOT NULL
);
CREATE INDEX interactions_customer ON interactions(tenant_id, customer_id, id);

CREATE TABLE queue_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    time TIMESTAMPTZ NOT NULL,
    contact_id TEXT NOT NULL,
    queue TEXT,
    agent TEXT,
    event TEXT NOT NULL,
    data JSONB NOT NULL
);
CREATE INDEX queue_log_tenant_time ON queue_log(tenant_id, time);
CREATE INDEX queue_log_contact ON queue_log(tenant_id, contact_id);

CREATE TABLE cdr (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    contact_id TEXT NOT NULL,
    leg TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    answered_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ NOT NULL,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    result TEXT NOT NULL,
    queue TEXT,
    agent TEXT,
    wait_ms BIGINT NOT NULL,
    talk_ms BIGINT NOT NULL,
    wrap_ms BIGINT NOT NULL,
    recording TEXT,
    quality JSONB NOT NULL
);
CREATE INDEX cdr_tenant_started ON cdr(tenant_id, started_at);

CREATE TABLE routing_objects (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    body JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, kind, name)
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    actor TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    before JSONB,
    after JSONB
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);
