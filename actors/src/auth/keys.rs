//! The keys tokens are verified with: per-tenant gateway keys from the configuration
//! (`[web] apim_public_key`, `{tenant}_apim_public_key`, `jwks_file`) and the platform's own
//! signing key (`abaco_control::tokens`), shared by every process of a deployment.

use std::collections::HashMap;
use std::sync::Arc;

use abaco_core::Config;
use abaco_identity::issuer::TokenIssuer;
use abaco_identity::secrets::SecretBox;
use abaco_identity::{PublicKey, PublicKeys};
use abaco_store::Store;

/// Verification keys and the platform's token issuer. Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    /// Keys of every configured tenant's identity gateway; `None` key = the global one.
    tenant_keys: Arc<HashMap<Option<String>, Vec<PublicKey>>>,
    jwks: Arc<Vec<PublicKey>>,
    pub issuer: Arc<TokenIssuer>,
    pub secrets: Option<Arc<SecretBox>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("config key [web] {key} holds no usable public key: {cause}")]
    BadPublicKey { key: String, cause: String },
    #[error("cannot read [web] jwks_file {path}: {cause}")]
    Jwks { path: String, cause: String },
    #[error("config key [web] encryption_key is invalid: {0}")]
    BadEncryptionKey(String),
    #[error("the platform signing key could not be loaded or created: {0}")]
    Signing(String),
}

impl Keys {
    pub async fn load(config: &Config, store: &Store) -> Result<Keys, KeyError> {
        let mut tenant_keys: HashMap<Option<String>, Vec<PublicKey>> = HashMap::new();
        let mut add = |tenant: Option<String>, key: &str, value: String| -> Result<(), KeyError> {
            let keys =
                PublicKeys::from_config_value(&value).map_err(|e| KeyError::BadPublicKey {
                    key: key.to_string(),
                    cause: e.to_string(),
                })?;
            tenant_keys
                .entry(tenant)
                .or_default()
                .extend(keys.iter().cloned());
            Ok(())
        };
        if let Some(v) = config
            .raw
            .get("web", "apim_public_key")
            .filter(|v| !v.trim().is_empty())
        {
            add(None, "apim_public_key", v)?;
        }
        for tenant in &config.web.tenants {
            let key = format!("{}_apim_public_key", tenant.to_ascii_lowercase());
            if let Some(v) = config.raw.get("web", &key).filter(|v| !v.trim().is_empty()) {
                add(Some(tenant.clone()), &key, v)?;
            }
        }
        let jwks = match config
            .raw
            .get("web", "jwks_file")
            .filter(|v| !v.trim().is_empty())
        {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| KeyError::Jwks {
                    path: path.clone(),
                    cause: e.to_string(),
                })?;
                PublicKeys::from_jwks_json(&text)
                    .map_err(|e| KeyError::Jwks {
                        path,
                        cause: e.to_string(),
                    })?
                    .iter()
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        let secrets = match &config.web.encryption_key {
            Some(k) => Some(Arc::new(
                SecretBox::new(k).map_err(|e| KeyError::BadEncryptionKey(e.to_string()))?,
            )),
            None => None,
        };
        let issuer = Arc::new(
            abaco_control::tokens::signing_key(store)
                .await
                .map_err(|e| KeyError::Signing(e.to_string()))?,
        );
        Ok(Keys {
            tenant_keys: Arc::new(tenant_keys),
            jwks: Arc::new(jwks),
            issuer,
            secrets,
        })
    }

    /// Keys that may sign a gateway token of `tenant`: its own, the global ones, the JWKS ones.
    pub fn for_tenant(&self, tenant: &str) -> Vec<PublicKey> {
        let mut keys = Vec::new();
        if let Some(k) = self.tenant_keys.get(&Some(tenant.to_string())) {
            keys.extend(k.iter().cloned());
        }
        if let Some(k) = self.tenant_keys.get(&None) {
            keys.extend(k.iter().cloned());
        }
        keys.extend(self.jwks.iter().cloned());
        keys
    }
}
