//! Authentication: JWT access and refresh tokens (HS256) and argon2id password hashes.
//!
//! An access token carries the user (`sub`) and the device/session (`dev`) created at login.
//! A refresh token additionally carries a `jti` the store remembers, so each one is usable
//! once (rotation); a reused one is refused and revokes its device's session.
//! Hashing is CPU-heavy: callers run [`PasswordHasher::hash`] and [`PasswordHasher::verify`]
//! in `spawn_blocking`.

use crate::error::ErrorCode;
use crate::ids::{DeviceId, UserId};
use crate::time::now_secs;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a token or credential was refused. All map to HTTP 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing bearer token")]
    Missing,
    /// The token is past its `exp`.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm (including `none`), wrong type or garbage.
    #[error("invalid token")]
    Invalid,
    /// The user was deleted or disabled, or the session was revoked.
    #[error("token revoked")]
    Revoked,
    /// Unknown email or wrong password (deliberately indistinguishable).
    #[error("invalid email or password")]
    BadCredentials,
    /// A refresh token presented a second time.
    #[error("refresh token already used")]
    RefreshReused,
}

impl ErrorCode for AuthError {
    fn code(&self) -> &'static str {
        match self {
            Self::Missing => "unauthenticated",
            Self::Expired => "token_expired",
            Self::Invalid => "invalid_token",
            Self::Revoked => "token_revoked",
            Self::BadCredentials => "invalid_credentials",
            Self::RefreshReused => "refresh_token_reused",
        }
    }
    fn http_status(&self) -> u16 {
        401
    }
}

/// Token kind, so a refresh token can never be used as an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Short-lived, presented on every call.
    Access,
    /// Long-lived, exchanged once for a new pair.
    Refresh,
}

/// JWT claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: i64,
    /// Device (login session) id.
    pub dev: String,
    /// Token kind.
    pub typ: TokenKind,
    /// Unique token id; refresh tokens are tracked by it.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

impl Claims {
    /// The user.
    pub fn user(&self) -> UserId {
        UserId(self.sub)
    }
    /// The device.
    pub fn device(&self) -> DeviceId {
        DeviceId(self.dev.clone())
    }
}

/// A freshly issued access + refresh pair.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
    /// The refresh token's `jti`, to be stored.
    pub refresh_jti: String,
    /// Refresh expiry, Unix seconds.
    pub refresh_exp: i64,
    /// Access lifetime in seconds (`expiresIn`).
    pub expires_in: i64,
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtKeys {
    enc: EncodingKey,
    dec: DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl JwtKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self { enc: EncodingKey::from_secret(secret), dec: DecodingKey::from_secret(secret), access_ttl, refresh_ttl }
    }

    fn sign(&self, user: UserId, device: &DeviceId, typ: TokenKind, ttl: Duration) -> (String, Claims) {
        let iat = now_secs();
        let claims = Claims {
            sub: user.0,
            dev: device.0.clone(),
            typ,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat,
            exp: iat + ttl.as_secs() as i64,
        };
        // HS256 signing of a serializable struct cannot fail.
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.enc).expect("HS256 signing");
        (token, claims)
    }

    /// Issues an access + refresh pair for a user's device.
    pub fn issue(&self, user: UserId, device: &DeviceId) -> TokenPair {
        let (access, _) = self.sign(user, device, TokenKind::Access, self.access_ttl);
        let (refresh, rc) = self.sign(user, device, TokenKind::Refresh, self.refresh_ttl);
        TokenPair { access, refresh, refresh_jti: rc.jti, refresh_exp: rc.exp, expires_in: self.access_ttl.as_secs() as i64 }
    }

    /// Verifies a token's signature, algorithm (HS256 only), expiry and kind.
    ///
    /// # Errors
    /// [`AuthError::Expired`] past `exp`, [`AuthError::Invalid`] for anything else wrong.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]); // `sub` is numeric; serde requires it
        let data = decode::<Claims>(token, &self.dec, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        if data.claims.typ != kind {
            return Err(AuthError::Invalid);
        }
        Ok(data.claims)
    }
}

/// argon2id with configurable cost.
#[derive(Clone)]
pub struct PasswordHasher {
    params: argon2::Params,
}

impl PasswordHasher {
    /// A hasher using `memory_kib` KiB and `iterations` passes (parallelism 1).
    ///
    /// # Errors
    /// When the parameters are outside argon2's limits.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, String> {
        let params = argon2::Params::new(memory_kib, iterations, 1, None).map_err(|e| e.to_string())?;
        Ok(Self { params })
    }

    fn argon(&self) -> argon2::Argon2<'static> {
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, self.params.clone())
    }

    /// A PHC-format hash of `password` with a fresh salt.
    pub fn hash(&self, password: &str) -> String {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 params were validated in new()")
            .to_string()
    }

    /// Whether `password` matches a PHC hash (its own embedded params are used).
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(phc).is_ok_and(|h| self.argon().verify_password(password.as_bytes(), &h).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32], Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn issue_and_verify() {
        let k = keys();
        let pair = k.issue(UserId(5), &DeviceId("d1".into()));
        let c = k.verify(&pair.access, TokenKind::Access).unwrap();
        assert_eq!((c.sub, c.dev.as_str()), (5, "d1"));
        assert!(matches!(k.verify(&pair.access, TokenKind::Refresh), Err(AuthError::Invalid)));
        assert_eq!(k.verify(&pair.refresh, TokenKind::Refresh).unwrap().jti, pair.refresh_jti);
    }

    #[test]
    fn rejects_forged_none_and_expired() {
        let k = keys();
        let other = JwtKeys::new(&[8u8; 32], Duration::from_secs(60), Duration::from_secs(60));
        let forged = other.issue(UserId(5), &DeviceId("d".into())).access;
        assert!(matches!(k.verify(&forged, TokenKind::Access), Err(AuthError::Invalid)));

        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = format!(r#"{{"sub":5,"dev":"d","typ":"access","jti":"x","iat":0,"exp":{}}}"#, now_secs() + 60);
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(body));
        assert!(matches!(k.verify(&none, TokenKind::Access), Err(AuthError::Invalid)));

        let expired = JwtKeys::new(&[7u8; 32], Duration::ZERO, Duration::ZERO).issue(UserId(5), &DeviceId("d".into()));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(k.verify(&expired.access, TokenKind::Access), Err(AuthError::Expired)));
    }

    #[test]
    fn password_hash_verifies() {
        let h = PasswordHasher::new(1024, 1).unwrap();
        let phc = h.hash("123456");
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("123456", &phc));
        assert!(!h.verify("1234567", &phc));
        assert!(!h.verify("123456", "garbage"));
    }
}
