-- +goose Up
-- Agents whose egress an operator cut (contain --action egress-block).
CREATE TABLE egress_blocks (
    container_id TEXT    NOT NULL PRIMARY KEY,
    blocked_at   INTEGER NOT NULL -- unix seconds
);
-- Timed grants (egress allow --for); rows past expires_at are not restored.
CREATE TABLE egress_grants (
    id           INTEGER NOT NULL PRIMARY KEY,
    agent        TEXT    NOT NULL, -- full agent name the grant matches on
    host         TEXT    NOT NULL,
    port         INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL, -- unix nanoseconds
    container_id TEXT    NOT NULL,
    agent_name   TEXT    NOT NULL,
    project      TEXT    NOT NULL
);

-- +goose Down
DROP TABLE egress_grants;
DROP TABLE egress_blocks;
