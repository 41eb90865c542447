//! The validated domain types refuse what they must, and each refusal names
//! the `E_*` status a point answers it with.
#![allow(missing_docs)]

use rdv_wire::{
    Cookie, CookieTooLong, MAX_COOKIE_LEN, MAX_NAMESPACE_LEN, Namespace, NamespaceError,
    ResponseStatus, Ttl, TtlOutOfRange,
};

#[test]
fn every_namespace_error_maps_to_invalid_namespace() {
    let errors = [
        Namespace::new("").unwrap_err(),
        Namespace::new("x".repeat(MAX_NAMESPACE_LEN + 1)).unwrap_err(),
        Namespace::from_bytes(&[b'x'; MAX_NAMESPACE_LEN + 1]).unwrap_err(),
        Namespace::from_bytes(&[0xff, 0xfe]).unwrap_err(),
    ];
    assert!(matches!(errors[0], NamespaceError::Empty));
    assert!(matches!(errors[1], NamespaceError::TooLong(256)));
    assert!(matches!(errors[3], NamespaceError::NotUtf8));
    for e in errors {
        assert_eq!(e.status(), ResponseStatus::InvalidNamespace, "{e:?}");
        assert_eq!(e.status().name(), "E_INVALID_NAMESPACE");
    }
}

#[test]
fn an_oversized_cookie_maps_to_invalid_cookie() {
    assert!(Cookie::new(vec![0u8; MAX_COOKIE_LEN]).is_ok());
    let e = Cookie::new(vec![0u8; MAX_COOKIE_LEN + 1]).unwrap_err();
    assert_eq!(e, CookieTooLong(MAX_COOKIE_LEN + 1));
    assert_eq!(e.status(), ResponseStatus::InvalidCookie);
    assert_eq!(e.status().name(), "E_INVALID_COOKIE");
}

#[test]
fn ttl_within_bounds_is_inclusive_and_outside_maps_to_invalid_ttl() {
    let (min, max) = (Ttl::from_secs(7200), Ttl::from_secs(259_200));
    for ok in [7200, 7201, 259_199, 259_200] {
        assert_eq!(Ttl::from_secs(ok).within(min, max), Ok(Ttl::from_secs(ok)));
    }
    for bad in [0, 7199, 259_201, u64::MAX] {
        let e = Ttl::from_secs(bad).within(min, max).unwrap_err();
        assert_eq!(
            e,
            TtlOutOfRange {
                ttl: Ttl::from_secs(bad),
                min,
                max
            }
        );
        assert_eq!(e.status(), ResponseStatus::InvalidTtl, "ttl {bad}");
        assert_eq!(e.status().name(), "E_INVALID_TTL");
        assert_eq!(
            e.to_string(),
            format!("ttl {bad}s is outside the allowed range 7200s..=259200s")
        );
    }
}
