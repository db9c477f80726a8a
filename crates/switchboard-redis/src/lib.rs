//! placeholder
use switchboard_core::*;
/// placeholder
pub async fn connect(url: &str) -> Result<MemoryBroker> {
    Err(Error::unsupported("redis", url.to_string()))
}
