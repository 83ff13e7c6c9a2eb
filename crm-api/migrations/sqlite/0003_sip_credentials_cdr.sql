-- Agents' SIP credentials as digest hashes (never the password): HA1 = H(user:realm:password)
-- for MD5 and SHA-256, bound to the realm they were computed for. The extension is the
-- phone's user name; the gateway identifies a phone by it alone, so it is unique per node.
CREATE TABLE agent_sip (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    agent TEXT NOT NULL,
    extension TEXT NOT NULL UNIQUE,
    realm TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent)
);

-- CDR completeness: voice quality (MOS x100), recording length, voicemail, transfer.
ALTER TABLE cdr ADD COLUMN mos_x100 INTEGER;
ALTER TABLE cdr ADD COLUMN recording_ms INTEGER;
ALTER TABLE cdr ADD COLUMN voicemail TEXT;
ALTER TABLE cdr ADD COLUMN transfer TEXT;
CREATE INDEX cdr_contact ON cdr(tenant_id, contact_id);
