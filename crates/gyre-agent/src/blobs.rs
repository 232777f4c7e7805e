//! [`HttpStorage`]: the executor's [`Storage`] on the server's blob API
//! (`PUT`/`GET /agent/v1/blobs/{key}`, `GET /agent/v1/blobs?prefix=`).
//!
//! Files are streamed both ways (64 KiB reads from disk, response chunks written as they
//! arrive), so a 500 MB cache never sits in memory. Network errors and 5xx answers are
//! retried from the start of the file with capped backoff.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use gyre_executor::{Storage, StorageFuture};
use gyre_protocol::agent::{BlobList, BlobStored};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;
use crate::client::{Client, check, json, retry};

/// How long a blob request is retried before the step fails. Long: while the agent
/// holds the lease, waiting beats failing the job; a lost lease stops the task anyway.
const BLOB_RETRY_BUDGET: Duration = Duration::from_secs(600);
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// [`Storage`] through the server, authenticated as a registered agent.
#[derive(Clone, Debug)]
pub struct HttpStorage {
    client: Client,
}

impl HttpStorage {
    /// Blobs of the server at `server` (e.g. `https://gyre.example.com`), with the agent
    /// token that registration returned.
    pub fn new(server: &str, agent_token: &str) -> Result<HttpStorage, Error> {
        Ok(HttpStorage {
            client: Client::new(server, agent_token)?,
        })
    }

    pub(crate) fn from_client(client: Client) -> HttpStorage {
        HttpStorage { client }
    }

    fn blob_url(&self, key: &str) -> Url {
        self.client
            .url(std::iter::once("blobs").chain(key.split('/')))
    }

    async fn put(&self, key: &str, from: &Path, only_new: bool) -> Result<bool, Error> {
        let mut url = self.blob_url(key);
        if only_new {
            url.query_pairs_mut().append_pair("only_new", "true");
        }
        retry("storing a blob", Some(BLOB_RETRY_BUDGET), || async {
            let file = tokio::fs::File::open(from)
                .await
                .map_err(|e| Error::io(format!("opening {}", from.display()), e))?;
            let len = file
                .metadata()
                .await
                .map_err(|e| Error::io(format!("reading {}", from.display()), e))?
                .len();
            let response = self
                .client
                .request(Method::PUT, url.clone())
                .header(CONTENT_LENGTH, len)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(file_stream(file)))
                .send()
                .await
                .map_err(|source| Error::Http {
                    context: format!("PUT blob {key}"),
                    source,
                })?;
            let response = check(response, &format!("PUT blob {key}")).await?;
            let stored: BlobStored = json(response, "blob stored").await?;
            Ok(stored.stored)
        })
        .await
    }

    async fn get(&self, key: &str, to: &Path) -> Result<bool, Error> {
        let url = self.blob_url(key);
        retry("fetching a blob", Some(BLOB_RETRY_BUDGET), || async {
            let context = format!("GET blob {key}");
            let response = self
                .client
                .request(Method::GET, url.clone())
                .send()
                .await
                .map_err(|source| Error::Http {
                    context: context.clone(),
                    source,
                })?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(false);
            }
            let mut response = check(response, &context).await?;
            let mut file = tokio::fs::File::create(to)
                .await
                .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
            while let Some(chunk) = response.chunk().await.map_err(|source| Error::Http {
                context: context.clone(),
                source,
            })? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(format!("writing {}", to.display()), e))?;
            }
            file.flush()
                .await
                .map_err(|e| Error::io(format!("writing {}", to.display()), e))?;
            Ok(true)
        })
        .await
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, SystemTime)>, Error> {
        let mut url = self.client.url(["blobs"]);
        url.query_pairs_mut().append_pair("prefix", prefix);
        let list: BlobList = retry("listing blobs", Some(BLOB_RETRY_BUDGET), || async {
            let response = self
                .client
                .request(Method::GET, url.clone())
                .timeout(LIST_TIMEOUT)
                .send()
                .await
                .map_err(|source| Error::Http {
                    context: "listing blobs".to_owned(),
                    source,
                })?;
            json(check(response, "listing blobs").await?, "listing blobs").await
        })
        .await?;
        Ok(list
            .blobs
            .into_iter()
            .map(|blob| {
                let modified = SystemTime::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(blob.modified_ms).unwrap_or(0));
                (blob.key, modified)
            })
            .collect())
    }
}

impl Storage for HttpStorage {
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        from: &'a Path,
        only_new: bool,
    ) -> StorageFuture<'a, bool> {
        Box::pin(async move { self.put(key, from, only_new).await.map_err(storage_error) })
    }

    fn get_file<'a>(&'a self, key: &'a str, to: &'a Path) -> StorageFuture<'a, bool> {
        Box::pin(async move { self.get(key, to).await.map_err(storage_error) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<(String, SystemTime)>> {
        Box::pin(async move { self.list_keys(prefix).await.map_err(storage_error) })
    }
}

fn storage_error(err: Error) -> gyre_executor::Error {
    gyre_executor::Error::Storage(err.to_string())
}

/// The file's bytes in 64 KiB pieces; stops after the first read error.
fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(err) => Some((Err(err), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn blob_keys_become_encoded_path_segments() {
        let storage = HttpStorage::new("http://gyre.test", "t").unwrap();
        assert_eq!(
            storage.blob_url("caches/v1%2Fdeps.tar.zst").as_str(),
            "http://gyre.test/agent/v1/blobs/caches/v1%252Fdeps.tar.zst"
        );
    }

    #[tokio::test]
    async fn files_stream_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 150 * 1024]).unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let pieces: Vec<usize> = file_stream(file)
            .map(|piece| piece.unwrap().len())
            .collect()
            .await;
        assert_eq!(pieces.iter().sum::<usize>(), 150 * 1024);
        assert!(pieces.iter().all(|n| *n <= 64 * 1024));
    }
}
