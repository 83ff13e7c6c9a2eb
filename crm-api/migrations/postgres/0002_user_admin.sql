-- Deactivation instead of deletion: users and service providers stay referenced by the
-- timeline and the audit log, so they are switched off, never removed.
ALTER TABLE users ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE service_providers ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
