//! The parsed-head half of the `Content-Length` rule whose byte half is in `head_scan`: values
//! repeated across lines or listed with commas that agree (anything else was refused before
//! Pingora parsed the head) are forwarded as one header, so that no backend ever sees a list it
//! might read as "invalid, therefore absent" and parse the body as a new request.

use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;

/// Collapse agreeing `Content-Length` values into one header. Returns false when the values do
/// not agree or are not plain digits (the caller refuses the request).
pub fn collapse(req: &mut RequestHeader) -> bool {
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return true;
    };
    let single = values.next().is_none() && !first.as_bytes().contains(&b',');
    if single && is_digits(first.as_bytes()) {
        return true;
    }
    let Some(n) = agreed(req) else {
        return false;
    };
    req.insert_header(CONTENT_LENGTH, n.to_string()).is_ok()
}

/// The parsed-head half of `head_scan`'s lookalike rule, for HTTP/2 requests, which never pass
/// the byte scanner: a `content_length` or `transfer.encoding` field would reach an HTTP/1
/// backend beside the framing the gateway writes for the body.
pub fn framing_lookalike(req: &RequestHeader) -> bool {
    req.headers
        .keys()
        .any(|name| super::head_scan::framing_lookalike(name.as_str().as_bytes()))
}

fn is_digits(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    !v.is_empty() && v.iter().all(u8::is_ascii_digit)
}

/// The one value every element of every `Content-Length` line names, if there is one.
fn agreed(req: &RequestHeader) -> Option<u64> {
    let mut agreed = None;
    for line in req.headers.get_all(CONTENT_LENGTH) {
        for element in line.as_bytes().split(|&b| b == b',') {
            if !is_digits(element) {
                return None;
            }
            let n: u64 = std::str::from_utf8(element.trim_ascii())
                .ok()?
                .parse()
                .ok()?;
            if agreed.is_some_and(|a| a != n) {
                return None;
            }
            agreed = Some(n);
        }
    }
    agreed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(values: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/", None).expect("head");
        for v in values {
            r.append_header("Content-Length", *v).expect("header");
        }
        r
    }

    fn lengths(r: &RequestHeader) -> Vec<String> {
        r.headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect()
    }

    #[test]
    fn agreeing_values_become_one_header() {
        for values in [
            &["10", "10"][..],
            &["10, 10"],
            &["10,10", " 10 "],
            &["010", "10"],
        ] {
            let mut r = req(values);
            assert!(collapse(&mut r), "{values:?}");
            assert_eq!(lengths(&r), vec!["10"], "{values:?}");
        }
        let mut r = req(&["7"]);
        assert!(collapse(&mut r));
        assert_eq!(lengths(&r), vec!["7"]);
        let mut r = req(&[]);
        assert!(collapse(&mut r));
        assert!(lengths(&r).is_empty());
    }

    #[test]
    fn disagreeing_or_non_digit_values_are_refused() {
        for values in [
            &["5", "10"][..],
            &["5, 10"],
            &["+10"],
            &["1_0"],
            &["10,"],
            &["x"],
        ] {
            assert!(!collapse(&mut req(values)), "{values:?}");
        }
    }
}
