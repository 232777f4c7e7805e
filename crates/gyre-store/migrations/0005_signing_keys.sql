-- Keys the server signs job OIDC tokens with. `sealed` is the private key (PKCS#8 DER)
-- sealed by gyre-secrets, `public_jwk` its public half as a JWK (JSON text). Every replica
-- signs with the oldest key and publishes them all (JWKS), so replicas that raced to
-- create the first key still agree. Same portability rules as 0001.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
