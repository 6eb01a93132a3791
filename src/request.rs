//! What the core knows about a request: its headers (pseudo-headers included), as Envoy hands
//! them over, and whether the downstream connection is TLS. Header names are lower-case (Envoy
//! normalises them); values are kept as sent.

/// `1.2.3.4:5` → `1.2.3.4`; `[::1]:5` → `::1`; anything else as it is.
fn without_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

/// A request's facts. Built once per request from a few host calls.
#[derive(Default, Clone)]
pub struct RequestFacts {
    headers: Vec<(String, String)>,
    downstream_tls: bool,
    end_of_stream: bool,
    /// The downstream connection's remote address (without port), when the host read it.
    client_address: Option<String>,
    /// Envoy took that address from `x-forwarded-for` (it says so with port 0).
    client_address_forwarded: bool,
    /// The request's dynamic metadata (a serialized `envoy.config.core.v3.Metadata`), when read.
    dynamic_metadata: Option<Vec<u8>>,
}

/// Header values may be credentials: Debug shows names only.
impl std::fmt::Debug for RequestFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestFacts")
            .field("header_names", &self.header_names().collect::<Vec<_>>())
            .field("downstream_tls", &self.downstream_tls)
            .field("end_of_stream", &self.end_of_stream)
            .finish()
    }
}

impl RequestFacts {
    pub fn new(headers: Vec<(String, String)>) -> Self {
        Self {
            headers,
            downstream_tls: false,
            end_of_stream: false,
            client_address: None,
            client_address_forwarded: false,
            dynamic_metadata: None,
        }
    }

    /// Records the request's dynamic metadata, as the host read it.
    pub fn with_dynamic_metadata(mut self, metadata: Option<Vec<u8>>) -> Self {
        self.dynamic_metadata = metadata;
        self
    }

    /// The request's dynamic metadata, when the host read it.
    pub fn dynamic_metadata(&self) -> Option<&[u8]> {
        self.dynamic_metadata.as_deref()
    }

    /// Records whether the client's connection to Envoy is TLS. `:scheme` cannot tell: Envoy
    /// copies a client-sent `x-forwarded-proto` into it unless `use_remote_address` is set.
    pub fn with_downstream_tls(mut self, tls: bool) -> Self {
        self.downstream_tls = tls;
        self
    }

    /// Records that the headers end the request (no body follows).
    pub fn with_end_of_stream(mut self, end_of_stream: bool) -> Self {
        self.end_of_stream = end_of_stream;
        self
    }

    /// Records the connection's remote address (`ip:port` or `[ip]:port`; the port is dropped).
    pub fn with_client_address(mut self, address: Option<&str>) -> Self {
        self.client_address = address.map(|a| without_port(a).to_owned());
        // A TCP peer never has port 0; Envoy gives one to an address it read from
        // x-forwarded-for (the connection manager's use_remote_address is false).
        self.client_address_forwarded = address.is_some_and(|a| a.ends_with(":0"));
        self
    }

    /// Whether the client address came from `x-forwarded-for` rather than the TCP peer.
    pub fn client_address_forwarded(&self) -> bool {
        self.client_address_forwarded
    }

    pub fn client_address(&self) -> Option<&str> {
        self.client_address.as_deref()
    }

    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    pub fn downstream_tls(&self) -> bool {
        self.downstream_tls
    }

    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order (a header may be sent several times).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n.as_str())
    }

    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or("")
    }

    /// `:path` with its query string.
    pub fn path_and_query(&self) -> &str {
        self.header(":path").unwrap_or("")
    }

    /// `:path` without the query string.
    pub fn path(&self) -> &str {
        let full = self.path_and_query();
        full.split_once('?').map_or(full, |(path, _)| path)
    }

    pub fn query(&self) -> Option<&str> {
        self.path_and_query().split_once('?').map(|(_, q)| q)
    }

    pub fn authority(&self) -> &str {
        self.header(":authority").unwrap_or("")
    }

    /// Envoy's request id, echoed in problem bodies so a caller can quote it.
    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }
}

/// A header name we can read or set: a lower-case RFC 9110 token (Envoy hands names over
/// lower-cased, so a configured name must be written that way to ever match).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
        })
}

/// The byte that a `%XX` escape starting at `bytes[at]` stands for, if it is one.
pub fn percent_escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    let hex = |i: usize| bytes.get(i).and_then(|h| char::from(*h).to_digit(16));
    let (hi, lo) = (hex(at + 1)?, hex(at + 2)?);
    u8::try_from(hi * 16 + lo).ok()
}

/// The one way unit tests build [`RequestFacts`].
#[cfg(test)]
pub(crate) mod test_support {
    use super::RequestFacts;

    /// A request under construction. The downstream connection is TLS when `:scheme` is
    /// `https`, unless [`TestRequest::tls`] says otherwise.
    #[derive(Clone)]
    pub(crate) struct TestRequest {
        headers: Vec<(String, String)>,
        tls: Option<bool>,
        end_of_stream: bool,
    }

    impl TestRequest {
        /// Exactly these headers, in order (a repeated name is a header sent several times);
        /// a body may follow.
        pub(crate) fn with_headers(pairs: &[(&str, &str)]) -> Self {
            let headers = pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            Self {
                headers,
                tls: None,
                end_of_stream: false,
            }
        }

        /// A bodyless HTTPS `GET` of `path` (query included) to `api.test`, request id `rid-1`.
        pub(crate) fn get(path: &str) -> Self {
            Self::with_headers(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "api.test"),
                (":path", path),
                ("x-request-id", "rid-1"),
            ])
            .end_of_stream(true)
        }

        /// Sets a header: earlier values of it are dropped, the new one goes last.
        pub(crate) fn set_header(mut self, name: &str, value: &str) -> Self {
            self.headers.retain(|(n, _)| n != name);
            self.add_header(name, value)
        }

        /// [`Self::set_header`] for each pair, in order.
        pub(crate) fn set_headers(self, pairs: &[(&str, &str)]) -> Self {
            pairs
                .iter()
                .fold(self, |request, (n, v)| request.set_header(n, v))
        }

        /// Adds one more value of a header, keeping those already there.
        pub(crate) fn add_header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.to_owned(), value.to_owned()));
            self
        }

        /// Whether the downstream connection is TLS, whatever `:scheme` says.
        pub(crate) fn tls(mut self, tls: bool) -> Self {
            self.tls = Some(tls);
            self
        }

        pub(crate) fn end_of_stream(mut self, end_of_stream: bool) -> Self {
            self.end_of_stream = end_of_stream;
            self
        }

        pub(crate) fn build(self) -> RequestFacts {
            let tls = self.tls.unwrap_or_else(|| {
                self.headers
                    .iter()
                    .any(|(n, v)| n == ":scheme" && v == "https")
            });
            RequestFacts::new(self.headers)
                .with_downstream_tls(tls)
                .with_end_of_stream(self.end_of_stream)
        }
    }
}
