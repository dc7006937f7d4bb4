//! What a registry holds for an image, asked the way a node's runtime asks: which platforms
//! its manifest (or index) offers, with a login or anonymously. Only manifests and the small
//! config blob of a single-platform image are read, never layers. The protocol is
//! `oci-client`'s (the ORAS project's OCI distribution client); this file reads its answers.

pub mod docker_config;

use docker_config::Login;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// Platforms as `os/architecture` (`linux/arm64`), as `status.nodeInfo` names them.
pub type Platforms = BTreeSet<String>;

/// Why a registry did not give an image's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 401 or 403: the login (or none) is not let in.
    Unauthorized(String),
    /// 404: the registry has no such repository or tag.
    NotFound(String),
    /// No answer: DNS, connection, TLS or timeout, as the client said it.
    Unreachable(String),
    /// Anything else, as the registry said it.
    Other(String),
}

/// What a manifest is.
#[derive(Debug, PartialEq, Eq)]
pub enum Manifest {
    /// An index (manifest list): its platforms.
    Index(Platforms),
    /// One image: the digest of its config, which names its platform.
    Image { config: String },
}

/// Reads a manifest or an index, of either the OCI or the Docker media types. Attestation
/// entries (`unknown/unknown`) are no platform.
pub fn read_manifest(raw: &[u8]) -> Result<Manifest, String> {
    let doc: Value =
        serde_json::from_slice(raw).map_err(|e| format!("the manifest is not JSON ({e})"))?;
    if let Some(entries) = doc.get("manifests").and_then(Value::as_array) {
        let platforms = entries
            .iter()
            .filter_map(|m| {
                let p = m.get("platform")?;
                let os = p.get("os")?.as_str()?;
                let arch = p.get("architecture")?.as_str()?;
                (os != "unknown").then(|| format!("{os}/{arch}"))
            })
            .collect();
        return Ok(Manifest::Index(platforms));
    }
    doc.pointer("/config/digest")
        .and_then(Value::as_str)
        .map(|d| Manifest::Image {
            config: d.to_owned(),
        })
        .ok_or_else(|| "the manifest is neither an index nor an image manifest".to_owned())
}

/// The platform an image config says, `os/architecture`.
pub fn read_config(raw: &[u8]) -> Result<String, String> {
    let doc: Value =
        serde_json::from_slice(raw).map_err(|e| format!("the image config is not JSON ({e})"))?;
    let field = |k: &str| doc.get(k).and_then(Value::as_str);
    match (field("os"), field("architecture")) {
        (Some(os), Some(arch)) => Ok(format!("{os}/{arch}")),
        _ => Err("the image config names no os and architecture".to_owned()),
    }
}

/// What an error of the client means for a node's pull.
pub fn refusal(e: &OciDistributionError) -> Refusal {
    match e {
        OciDistributionError::UnauthorizedError { url } => {
            Refusal::Unauthorized(format!("401 Unauthorized from {url}"))
        }
        OciDistributionError::AuthenticationFailure(m) => Refusal::Unauthorized(m.clone()),
        OciDistributionError::RegistryError { envelope, url } => {
            let text = format!("{envelope} from {url}");
            let code = |c: &[OciErrorCode]| envelope.errors.iter().any(|e| c.contains(&e.code));
            if code(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
                Refusal::Unauthorized(text)
            } else if code(&[
                OciErrorCode::ManifestUnknown,
                OciErrorCode::NameUnknown,
                OciErrorCode::NotFound,
            ]) {
                Refusal::NotFound(text)
            } else {
                Refusal::Other(text)
            }
        }
        OciDistributionError::ServerError { code, url, message } => {
            let text = format!("{code} from {url}: {}", message.trim());
            match code {
                401 | 403 => Refusal::Unauthorized(text),
                404 => Refusal::NotFound(text),
                _ => Refusal::Other(text),
            }
        }
        OciDistributionError::ImageManifestNotFoundError(m) => Refusal::NotFound(m.clone()),
        OciDistributionError::RequestError(e) => {
            // reqwest's own text is "error sending request"; the cause is in its chain.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            Refusal::Unreachable(text)
        }
        other => Refusal::Other(other.to_string()),
    }
}

/// Asks registries for manifests. Trusts the system's roots and `extra_roots` (PEM).
pub struct Registry {
    extra_roots: Vec<Vec<u8>>,
}

impl Registry {
    pub fn new(extra_roots: Vec<Vec<u8>>) -> Registry {
        // reqwest's rustls needs a process-wide provider; ring, as the rest of the binary.
        // An Err means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Registry { extra_roots }
    }

    fn client(&self) -> Client {
        Client::new(oci_client::client::ClientConfig {
            extra_root_certificates: self
                .extra_roots
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            read_timeout: Some(Duration::from_secs(10)),
            connect_timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        })
    }

    /// The platforms `image` offers to `login` (anonymous when None). A fresh client per
    /// question: the client keeps tokens per registry, and one login's must not answer for
    /// another's.
    pub async fn platforms(
        &self,
        image: &str,
        login: Option<&Login>,
    ) -> Result<Platforms, Refusal> {
        let reference: Reference = image
            .parse()
            .map_err(|e| Refusal::Other(format!("{image} is not an image reference ({e})")))?;
        let auth = match login {
            Some(l) => RegistryAuth::Basic(l.username.clone(), l.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let client = self.client();
        client
            .auth(&reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| refusal(&e))?;
        let (raw, _digest) = client
            .pull_manifest_raw(
                &reference,
                &auth,
                &[
                    OCI_IMAGE_INDEX_MEDIA_TYPE,
                    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
                    OCI_IMAGE_MEDIA_TYPE,
                    IMAGE_MANIFEST_MEDIA_TYPE,
                ],
            )
            .await
            .map_err(|e| refusal(&e))?;
        match read_manifest(&raw).map_err(|e| Refusal::Other(format!("{image}: {e}")))? {
            Manifest::Index(platforms) => Ok(platforms),
            Manifest::Image { config } => {
                let mut blob = Vec::new();
                client
                    .pull_blob(&reference, config.as_str(), &mut blob)
                    .await
                    .map_err(|e| refusal(&e))?;
                let platform =
                    read_config(&blob).map_err(|e| Refusal::Other(format!("{image}: {e}")))?;
                Ok(BTreeSet::from([platform]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    #[test]
    fn an_index_gives_its_platforms_and_an_image_its_config() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[
            {"digest":"sha256:a","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:b","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:c","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        assert_eq!(
            read_manifest(index).unwrap(),
            Manifest::Index(BTreeSet::from(["linux/amd64".into(), "linux/arm64".into()]))
        );
        let image = br#"{"schemaVersion":2,"config":{"digest":"sha256:cfg","size":1},"layers":[]}"#;
        assert_eq!(
            read_manifest(image).unwrap(),
            Manifest::Image {
                config: "sha256:cfg".into()
            }
        );
        assert!(read_manifest(b"{}").is_err());
        assert_eq!(
            read_config(br#"{"architecture":"amd64","os":"linux","rootfs":{}}"#).unwrap(),
            "linux/amd64"
        );
        assert!(read_config(br#"{"os":"linux"}"#).is_err());
    }

    fn registry_error(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "m".into(),
                    detail: Value::Null,
                }],
            },
            url: "https://r.example/v2/a/manifests/1".into(),
        }
    }

    #[test]
    fn registry_answers_are_read_as_a_node_would_fail() {
        let kind = |e: OciDistributionError| match refusal(&e) {
            Refusal::Unauthorized(_) => "unauthorized",
            Refusal::NotFound(_) => "not found",
            Refusal::Unreachable(_) => "unreachable",
            Refusal::Other(_) => "other",
        };
        assert_eq!(
            kind(OciDistributionError::UnauthorizedError { url: "u".into() }),
            "unauthorized"
        );
        assert_eq!(kind(registry_error(OciErrorCode::Denied)), "unauthorized");
        assert_eq!(
            kind(registry_error(OciErrorCode::ManifestUnknown)),
            "not found"
        );
        assert_eq!(kind(registry_error(OciErrorCode::NameUnknown)), "not found");
        assert_eq!(kind(registry_error(OciErrorCode::Toomanyrequests)), "other");
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "no\n".into(),
        };
        assert_eq!(kind(server(403)), "unauthorized");
        assert_eq!(kind(server(404)), "not found");
        assert_eq!(kind(server(500)), "other");
    }
}
