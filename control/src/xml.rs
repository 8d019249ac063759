//! ELB's XML documents: `<{Action}Response>` envelopes and `ErrorResponse`. Text is escaped
//! with quick-xml.

use quick_xml::escape::escape;

pub const NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/";

/// A small writer for nested elements.
#[derive(Default)]
pub struct Xml {
    out: String,
}

impl Xml {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>`, escaped.
    pub fn leaf(&mut self, tag: &str, text: impl std::fmt::Display) -> &mut Self {
        let text = text.to_string();
        self.open(tag);
        self.out.push_str(&escape(text.as_str()));
        self.close(tag)
    }

    /// Escaped text, for a `<member>` holding a plain value.
    pub fn leaf_text(&mut self, text: &str) -> &mut Self {
        self.out.push_str(&escape(text));
        self
    }

    /// `<tag><member>…</member>…</tag>` with each member written by `write`.
    pub fn members<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.open(tag);
        for item in items {
            self.open("member");
            write(self, item);
            self.close("member");
        }
        self.close(tag)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// IAM's namespace (its server-certificate actions are served beside ELB's).
pub const IAM_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// `<{action}Response xmlns=…><{action}Result>{result}</{action}Result><ResponseMetadata>…`.
pub fn response(action: &str, result: &str, request_id: &str) -> String {
    response_in(NAMESPACE, action, result, request_id)
}

/// [`response`] in another API's namespace.
pub fn response_in(namespace: &str, action: &str, result: &str, request_id: &str) -> String {
    format!(
        "<{action}Response xmlns=\"{namespace}\"><{action}Result>{result}</{action}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    )
}

pub fn error_response(fault: &str, code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{fault}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_members_nest() {
        let mut xml = Xml::new();
        xml.members("PolicyNames", ["a<b", "c&d"], |x, name| {
            x.leaf_text(name);
        });
        assert_eq!(
            xml.finish(),
            "<PolicyNames><member>a&lt;b</member><member>c&amp;d</member></PolicyNames>"
        );
        assert!(error_response("Sender", "X", "<&>", "r").contains("<Message>&lt;&amp;&gt;</Message>"));
    }
}
