//! `MediaStore` with `media.backend = "s3"` against a real S3-compatible server: moto, the one
//! named by `S3_ENDPOINT` or one started through `scripts/s3.sh` on a free port and stopped on
//! drop (an interrupted run's server is stopped by the script too: it is told the owning PID).
//! Every test works in a bucket of its own.
#![cfg(feature = "s3")]

use bytes::Bytes;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use storage_workers::media::MediaStore;
use switchboard_core::config::{Config, ConfigError, MediaBackend, MediaConfig};
use switchboard_core::store::StoreError;

/// An S3 server for one test: shared (from `S3_ENDPOINT`) or started here and stopped on drop.
struct S3Server {
    /// `http://127.0.0.1:<port>`.
    endpoint: String,
    /// Set when this test started the server.
    port: Option<u16>,
}

impl S3Server {
    /// The shared server from `S3_ENDPOINT`, or a new one.
    fn get() -> Self {
        match std::env::var("S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.trim().is_empty() => Self { endpoint: endpoint.trim_end_matches('/').to_owned(), port: None },
            _ => Self::start(),
        }
    }

    fn start() -> Self {
        let mut last_error = String::new();
        // A free port can be taken between the probe and the start: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("probe a free port").port();
            let out = s3_sh(&["start", &port.to_string()]);
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let endpoint = stdout.lines().find_map(|l| l.strip_prefix("S3_ENDPOINT=")).expect("s3.sh prints S3_ENDPOINT");
                return Self { endpoint: endpoint.to_owned(), port: Some(port) };
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("scripts/s3.sh start failed: {last_error}");
    }

    /// A new, empty bucket. object_store cannot create buckets; moto takes an unsigned
    /// `PUT /<bucket>`.
    async fn bucket(&self) -> String {
        let name = format!("sb-media-{}", uuid::Uuid::new_v4().simple());
        let res = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("PUT bucket reaches the S3 server");
        assert!(res.status().is_success(), "create bucket {name}: {} {:?}", res.status(), res.text().await);
        name
    }

    /// `[media]` for `bucket` on this server, keys under `prefix`.
    fn media(&self, bucket: &str, prefix: &str) -> MediaConfig {
        MediaConfig {
            backend: MediaBackend::S3,
            s3_bucket: Some(bucket.to_owned()),
            s3_endpoint: Some(self.endpoint.clone()),
            s3_region: "us-east-1".into(),
            // moto accepts any credentials, but requests must be signed.
            s3_access_key_id: Some("test-key-id".into()),
            s3_secret_access_key: Some("test-secret".into()),
            s3_prefix: prefix.to_owned(),
            s3_allow_http: true,
        }
    }

    fn store(&self, bucket: &str, prefix: &str) -> MediaStore {
        // The data dir is not used by the s3 backend: a path that does not exist proves it.
        MediaStore::from_config(&self.media(bucket, prefix), Path::new("/nonexistent/switchboard-data")).expect("S3 media store")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(port) = self.port {
            let out = s3_sh(&["stop", &port.to_string()]);
            if !out.status.success() {
                eprintln!("s3.sh stop {port}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn s3_sh(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        // An interrupted test run must not leave its servers behind.
        .env("S3_OWNER_PID", std::process::id().to_string())
        .output()
        .expect("run scripts/s3.sh")
}

/// `len` bytes that are neither text nor a repeating short pattern (xorshift).
fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn binary_and_large_objects_round_trip() {
    let s3 = S3Server::get();
    let bucket = s3.bucket().await;
    let store = s3.store(&bucket, "");

    let every_byte: Bytes = (0..=255u8).chain((0..=255u8).rev()).collect::<Vec<u8>>().into();
    store.put("m-bytes", every_byte.clone()).await.unwrap();
    assert_eq!(store.get("m-bytes").await.unwrap(), every_byte);

    let big = noise(5 << 20, 42);
    store.put("m-big", big.clone()).await.unwrap();
    let back = store.get("m-big").await.unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "the 5 MiB object came back different");

    // Empty objects and overwrites.
    store.put("m-empty", Bytes::new()).await.unwrap();
    assert!(store.get("m-empty").await.unwrap().is_empty());
    store.put("m-bytes", Bytes::from_static(b"replaced")).await.unwrap();
    assert_eq!(store.get("m-bytes").await.unwrap(), Bytes::from_static(b"replaced"));

    // A second store on the same bucket (another gateway) sees the same objects.
    let other_node = s3.store(&bucket, "");
    assert!(other_node.get("m-big").await.unwrap() == big);
}

#[tokio::test]
async fn a_missing_id_is_not_found() {
    let s3 = S3Server::get();
    let bucket = s3.bucket().await;
    let store = s3.store(&bucket, "media");
    match store.get("no-such-media").await {
        Err(StoreError::NotFound("media")) => {}
        other => panic!("expected NotFound(\"media\"), got {other:?}"),
    }
    store.put("present", Bytes::from_static(b"x")).await.unwrap();
    assert!(matches!(store.get("absent").await, Err(StoreError::NotFound("media"))));
}

#[tokio::test]
async fn prefixes_isolate_stores_sharing_a_bucket() {
    let s3 = S3Server::get();
    let bucket = s3.bucket().await;
    let a = s3.store(&bucket, "tenant-a/media");
    let b = s3.store(&bucket, "tenant-b");

    a.put("m-1", Bytes::from_static(b"from a")).await.unwrap();
    b.put("m-1", Bytes::from_static(b"from b")).await.unwrap();
    assert_eq!(a.get("m-1").await.unwrap(), Bytes::from_static(b"from a"));
    assert_eq!(b.get("m-1").await.unwrap(), Bytes::from_static(b"from b"));

    a.put("only-a", Bytes::from_static(b"a")).await.unwrap();
    assert!(matches!(b.get("only-a").await, Err(StoreError::NotFound("media"))));
    b.put("only-b", Bytes::from_static(b"b")).await.unwrap();
    assert!(matches!(a.get("only-b").await, Err(StoreError::NotFound("media"))));

    // The prefix really is the start of the object key.
    let root = s3.store(&bucket, "");
    assert_eq!(root.get("tenant-a/media/m-1").await.unwrap(), Bytes::from_static(b"from a"));
    assert_eq!(root.get("tenant-b/only-b").await.unwrap(), Bytes::from_static(b"b"));
    assert!(matches!(root.get("m-1").await, Err(StoreError::NotFound("media"))));
    // A trailing slash names the same prefix.
    let a_again = s3.store(&bucket, "tenant-a/media/");
    assert_eq!(a_again.get("m-1").await.unwrap(), Bytes::from_static(b"from a"));
}

#[tokio::test]
async fn a_wrong_bucket_is_a_backend_error() {
    let s3 = S3Server::get();
    let missing = format!("sb-missing-{}", uuid::Uuid::new_v4().simple());
    // Building the store contacts nothing; the first request fails.
    let store = s3.store(&missing, "");
    let err = store.put("m-1", Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "put into a missing bucket: {err:?}");
    // S3 answers 404 for the bucket too, but that is a misconfiguration, not a missing object.
    let err = store.get("m-1").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "get from a missing bucket: {err:?}");
}

#[test]
fn s3_backend_without_a_bucket_is_refused() {
    // By config validation...
    let set = [("media.backend".to_owned(), "s3".to_owned())];
    let err = Config::load(None, &HashMap::<String, String>::new(), &set).unwrap_err();
    let ConfigError::Invalid(list) = err else { panic!("expected Invalid, got {err}") };
    assert!(list.iter().any(|m| m.contains("media.s3_bucket must be set")), "{list:?}");
    // ...and by the store itself, for a config that skipped validation.
    let media = MediaConfig { backend: MediaBackend::S3, ..MediaConfig::default() };
    let Err(err) = MediaStore::from_config(&media, Path::new("/nonexistent")) else { panic!("expected an error") };
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}
