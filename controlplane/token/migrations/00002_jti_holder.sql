-- +goose Up
-- The thumbprint (hex SHA-256 of the DER) of the cert that redeemed each
-- jti: the same cert may repeat an exchange whose answer a CP crash lost,
-- until its agent is registered. Rows from before carry '' (no repeat).
ALTER TABLE token_jti ADD COLUMN holder TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE token_jti DROP COLUMN holder;
