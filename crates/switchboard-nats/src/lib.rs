//! placeholder
use switchboard_core::*;
/// placeholder
pub async fn connect(url: &str) -> Result<MemoryBroker> {
    Err(Error::unsupported("nats", url.to_string()))
}
