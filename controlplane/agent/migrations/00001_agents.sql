-- +goose Up
-- One row per registered agent container. thumbprint is the lowercase hex
-- SHA-256 of the agent leaf cert DER; times are unix nanoseconds (UTC).
CREATE TABLE agents (
    container_id  TEXT    NOT NULL,
    thumbprint    TEXT    NOT NULL,
    project       TEXT    NOT NULL DEFAULT '',
    agent_name    TEXT    NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    CONSTRAINT agents_container_id_unique UNIQUE (container_id),
    CONSTRAINT agents_thumbprint_unique UNIQUE (thumbprint)
);

-- +goose Down
DROP TABLE agents;
