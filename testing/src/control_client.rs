//! A client for the Query API that signs like the standard clients (SigV4), used by the tests,
//! the benchmark and the end-to-end scenarios.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// How a call is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// POST with a form body, signed for `elasticloadbalancing` (aws CLI, boto3).
    AwsPost,
    /// GET with the parameters in the query, signed for `lbu` with a dated Version.
    OscGet,
}

#[derive(Debug, Clone)]
pub struct ApiReply {
    pub status: u16,
    pub body: String,
}

impl ApiReply {
    /// The text of the first `<tag>` element.
    pub fn field(&self, tag: &str) -> Option<String> {
        let open = format!("<{tag}>");
        let start = self.body.find(&open)? + open.len();
        let end = self.body[start..].find(&format!("</{tag}>"))? + start;
        Some(self.body[start..end].to_owned())
    }

    /// Every `<tag>` text.
    pub fn fields(&self, tag: &str) -> Vec<String> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        self.body
            .match_indices(&open)
            .filter_map(|(i, _)| {
                let start = i + open.len();
                self.body[start..]
                    .find(&close)
                    .map(|end| self.body[start..start + end].to_owned())
            })
            .collect()
    }

    pub fn error_code(&self) -> Option<String> {
        self.body
            .contains("<ErrorResponse")
            .then(|| self.field("Code"))
            .flatten()
    }

    /// Panics unless the call succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }

    /// Panics unless the call failed with `status` and `code`.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.error_code().as_deref()),
            (status, Some(code)),
            "{}",
            self.body
        );
    }
}

/// A signed request, ready to send: (method, path and query, headers, body).
pub type SignedRequest = (&'static str, String, Vec<(String, String)>, Vec<u8>);

#[derive(Debug, Clone)]
pub struct QueryClient {
    /// `host:port` of the service.
    pub authority: String,
    pub access_key: String,
    pub secret_key: String,
    agent: ureq::Agent,
    /// `http` or `https`.
    scheme: &'static str,
    /// What the peer routes (the state feed, EDS) get: the bearer token of a control service
    /// on plain HTTP (over TLS the agent presents a client certificate instead).
    feed_token: Option<String>,
}

impl QueryClient {
    pub fn new(authority: impl Into<String>, access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        Self {
            authority: authority.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            agent,
            scheme: "http",
            feed_token: None,
        }
    }

    /// The same client presenting `token` to the peer routes.
    pub fn with_feed_token(mut self, token: Option<String>) -> Self {
        self.feed_token = token;
        self
    }

    /// The same client over TLS, through `agent` (which trusts the control service's CA).
    pub fn over_tls(mut self, agent: ureq::Agent) -> Self {
        self.agent = agent;
        self.scheme = "https";
        self
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// A GET of a peer route (`/v1/state`, `/v1/hosts`, `/v1/in-force`), with the feed token
    /// when there is one.
    pub fn peer_get(&self, url: &str) -> ureq::Request {
        let request = self.agent.get(url);
        match &self.feed_token {
            Some(token) => request.set("authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// A correctly signed call, as boto3 sends it.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<ApiReply, ClientError> {
        self.call_as(Style::AwsPost, action, params)
    }

    pub fn call_as(&self, style: Style, action: &str, params: &[(&str, &str)]) -> Result<ApiReply, ClientError> {
        let (method, path, headers, body) = self.signed(
            style,
            action,
            params,
            &self.access_key,
            &self.secret_key,
            SystemTime::now(),
        )?;
        self.send(method, &path, &headers, &body)
    }

    /// Builds a signed request with the given credentials and signing time.
    pub fn signed(
        &self,
        style: Style,
        action: &str,
        params: &[(&str, &str)],
        access_key: &str,
        secret: &str,
        at: SystemTime,
    ) -> Result<SignedRequest, ClientError> {
        // osc-cli sends the day it signs on as the Version.
        let signing_day = time::OffsetDateTime::from(at).date().to_string();
        let version = if style == Style::OscGet {
            signing_day.as_str()
        } else {
            "2012-06-01"
        };
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action);
        // A `Version` among the parameters (IAM's calls) replaces the ELB one.
        if !params.iter().any(|(name, _)| *name == "Version") {
            form.append_pair("Version", version);
        }
        for (name, value) in params {
            form.append_pair(name, value);
        }
        let encoded = form.finish();
        let (method, path, body, service, mut headers) = match style {
            Style::AwsPost => (
                "POST",
                "/".to_owned(),
                encoded.into_bytes(),
                "elasticloadbalancing",
                vec![(
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
                )],
            ),
            Style::OscGet => ("GET", format!("/?{encoded}"), Vec::new(), "lbu", vec![]),
        };
        headers.push(("host".to_owned(), self.authority.clone()));
        let identity = Credentials::new(access_key, secret, None, None, "sticky-client").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-2")
            .name(service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ClientError(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method,
            format!("{}://{}{path}", self.scheme, self.authority),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| ClientError(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ClientError(e.to_string()))?
            .into_parts();
        for (name, value) in instructions.headers() {
            headers.push((name.to_owned(), value.to_owned()));
        }
        Ok((method, path, headers, body))
    }

    /// Sends a request as built by [`QueryClient::signed`] (possibly altered).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ApiReply, ClientError> {
        let mut request = self.agent.request(method, &format!("{}{path}", self.url()));
        for (name, value) in headers {
            if name != "host" {
                request = request.set(name, value);
            }
        }
        let response = if body.is_empty() {
            request.call()
        } else {
            request.send_bytes(body)
        };
        let response = match response {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(ClientError(format!("{method} {path}: {e}"))),
        };
        let status = response.status();
        let body = response.into_string().map_err(|e| ClientError(e.to_string()))?;
        Ok(ApiReply { status, body })
    }

    /// The state feed of a listener: answers at once unless `version` is current.
    pub fn state(
        &self,
        lb: &str,
        port: u16,
        version: Option<u64>,
        timeout_ms: u64,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        self.state_as(lb, port, version, timeout_ms, None)
    }

    /// [`QueryClient::state`] as the follower `poller` (as a filter VM polls).
    pub fn state_as(
        &self,
        lb: &str,
        port: u16,
        version: Option<u64>,
        timeout_ms: u64,
        poller: Option<&str>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let mut url = format!("{}/v1/state/{lb}/{port}?timeout_ms={timeout_ms}", self.url());
        if let Some(v) = version {
            url.push_str(&format!("&version={v}"));
        }
        if let Some(poller) = poller {
            url.push_str(&format!("&poller={poller}"));
        }
        let response = match self.peer_get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(ClientError(format!("{url}: {e}"))),
        };
        let status = response.status();
        let text = response.into_string().map_err(|e| ClientError(e.to_string()))?;
        Ok((status, serde_json::from_str(&text).unwrap_or_default()))
    }

    /// Envoy's REST EDS request for `clusters`.
    pub fn eds(&self, clusters: &[&str]) -> Result<serde_json::Value, ClientError> {
        self.eds_as(clusters, "client", None)
    }

    /// Envoy's REST EDS request for `clusters`, from Envoy `node` holding `version_info`.
    pub fn eds_as(
        &self,
        clusters: &[&str],
        node: &str,
        version_info: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let request = sticky_control::feed::DiscoveryRequest {
            version_info: version_info.map(str::to_owned),
            node: Some(sticky_control::feed::Node {
                id: node.to_owned(),
                cluster: "client".to_owned(),
            }),
            resource_names: clusters.iter().map(|c| (*c).to_owned()).collect(),
            type_url: Some(sticky_control::feed::EDS_TYPE_URL.to_owned()),
        };
        let body = serde_json::to_string(&request).map_err(|e| ClientError(e.to_string()))?;
        let mut request = self.agent.post(&format!("{}/v3/discovery:endpoints", self.url()));
        if let Some(token) = &self.feed_token {
            request = request.set("authorization", &format!("Bearer {token}"));
        }
        let response = request
            .set("content-type", "application/json")
            .send_string(&body)
            .map_err(|e| ClientError(e.to_string()))?;
        let text = response.into_string().map_err(|e| ClientError(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ClientError(e.to_string()))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("query client: {0}")]
pub struct ClientError(pub String);
