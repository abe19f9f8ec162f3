//! Media bytes behind `object_store`, keyed by media id: the local filesystem, or (feature `s3`)
//! an S3-compatible object store shared by every node.

use bytes::Bytes;
use object_store::{local::LocalFileSystem, path::Path, ObjectStore, PutPayload};
use std::sync::Arc;
use switchboard_core::config::{MediaBackend, MediaConfig};
use switchboard_core::store::StoreError;

/// Where uploaded media bytes live.
#[derive(Clone)]
pub struct MediaStore {
    inner: Arc<dyn ObjectStore>,
}

impl MediaStore {
    /// The store `[media]` names: `local`, files under `<data_dir>/media`; `s3`, the bucket
    /// (under `media.s3_prefix`). Nothing is contacted yet: a wrong bucket or bad credentials
    /// show up as [`StoreError::Backend`] on the first `put`/`get`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when `backend = "s3"` but this binary was built without the
    /// `s3` feature, or no bucket is named; [`StoreError::Backend`] when the directory cannot be
    /// created or the S3 client cannot be built.
    pub fn from_config(media: &MediaConfig, data_dir: &std::path::Path) -> Result<Self, StoreError> {
        match media.backend {
            MediaBackend::Local => Self::local(&data_dir.join("media")),
            MediaBackend::S3 => Self::s3(media),
        }
    }

    #[cfg(feature = "s3")]
    fn s3(media: &MediaConfig) -> Result<Self, StoreError> {
        use object_store::aws::AmazonS3Builder;

        let bucket = media
            .s3_bucket
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .ok_or(StoreError::Invalid("media.s3_bucket must be set when media.backend = \"s3\""))?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&media.s3_region)
            .with_allow_http(media.s3_allow_http);
        if let Some(endpoint) = &media.s3_endpoint {
            // S3-compatible servers (MinIO, moto, ...) are addressed as <endpoint>/<bucket>/<key>.
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&media.s3_access_key_id, &media.s3_secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let s3 = builder.build().map_err(|e| {
            tracing::error!(error = %e, bucket, "cannot set up the S3 media store");
            StoreError::Backend(Box::new(e))
        })?;
        let prefix = Path::from(media.s3_prefix.as_str());
        let inner: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        };
        Ok(Self { inner })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_media: &MediaConfig) -> Result<Self, StoreError> {
        Err(StoreError::Invalid(
            "media.backend = \"s3\" but this binary was built without S3 support (storage-workers feature `s3`, \
             part of `cluster`)",
        ))
    }

    /// Media under `dir` on the local filesystem (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { inner: Arc::new(fs) })
    }

    /// Any object store (S3, GCS, in-memory for tests).
    pub fn with_store(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    /// Stores bytes under `id`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the write fails.
    pub async fn put(&self, id: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner
            .put(&Path::from(id), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    /// Reads the bytes of `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when missing, [`StoreError::Backend`] otherwise (also when the
    /// S3 bucket itself is missing: that is a misconfiguration, not a missing object).
    pub async fn get(&self, id: &str) -> Result<Bytes, StoreError> {
        let res = self.inner.get(&Path::from(id)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } if !is_missing_bucket(&e) => StoreError::NotFound("media"),
            e => StoreError::Backend(Box::new(e)),
        })?;
        res.bytes().await.map_err(|e| StoreError::Backend(Box::new(e)))
    }
}

/// S3 answers 404 both for a missing key and a missing bucket; only the error body
/// (`<Code>NoSuchBucket</Code>`), which object_store keeps in the error text, tells them apart.
fn is_missing_bucket(e: &object_store::Error) -> bool {
    e.to_string().contains("NoSuchBucket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn from_config_local_keeps_files_under_data_dir_media() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::from_config(&MediaConfig::default(), dir.path()).unwrap();
        store.put("m-1", Bytes::from_static(b"\x00\xffbytes")).await.unwrap();
        assert_eq!(store.get("m-1").await.unwrap(), Bytes::from_static(b"\x00\xffbytes"));
        assert!(dir.path().join("media").join("m-1").is_file());
        assert!(matches!(store.get("m-2").await, Err(StoreError::NotFound("media"))));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let media = MediaConfig {
            backend: MediaBackend::S3,
            s3_bucket: Some("b".into()),
            ..MediaConfig::default()
        };
        let Err(err) = MediaStore::from_config(&media, dir.path()) else { panic!("expected an error") };
        assert!(err.to_string().contains("built without S3 support"), "{err}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_without_a_bucket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let media = MediaConfig { backend: MediaBackend::S3, ..MediaConfig::default() };
        let Err(err) = MediaStore::from_config(&media, dir.path()) else { panic!("expected an error") };
        assert!(err.to_string().contains("media.s3_bucket"), "{err}");
    }
}
