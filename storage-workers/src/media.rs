//! Media bytes behind `object_store`, keyed by media id.

use bytes::Bytes;
use object_store::{local::LocalFileSystem, path::Path, ObjectStore, PutPayload};
use std::sync::Arc;
use switchboard_core::store::StoreError;

/// Where uploaded media bytes live.
#[derive(Clone)]
pub struct MediaStore {
    inner: Arc<dyn ObjectStore>,
}

impl MediaStore {
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
    /// [`StoreError::NotFound`] when missing, [`StoreError::Backend`] otherwise.
    pub async fn get(&self, id: &str) -> Result<Bytes, StoreError> {
        let res = self.inner.get(&Path::from(id)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound("media"),
            e => StoreError::Backend(Box::new(e)),
        })?;
        res.bytes().await.map_err(|e| StoreError::Backend(Box::new(e)))
    }
}
