-- +goose Up
-- Client-assertion jti values already redeemed, kept until the assertion
-- could no longer validate (expires_at, unix seconds, includes leeway).
CREATE TABLE token_jti (
    jti        TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX token_jti_expires_at ON token_jti (expires_at);

-- +goose Down
DROP TABLE token_jti;
