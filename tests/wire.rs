//! The wire formats: `grpc-timeout` (byte-equal to grpc-go's encoder, round trips, rejected
//! input), W3C `traceparent` and `baggage` (the specs' rules), `Canceller::remaining`, and the
//! opt-in `Carry` of values.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::time::Duration;
use tether::wire::grpc_timeout::{self, GrpcTimeoutError, MAX};
use tether::wire::{BAGGAGE, Baggage, Carry, TRACE_PARENT, TraceContextError, TraceParent};
use tether::{Canceller, Context, Key};

mod grpc_timeout_format {
    use super::*;

    /// grpc-go's `TestTimeoutEncode` table (internal/transport/http_util_test.go, later
    /// internal/grpcutil/encode_duration_test.go): the input duration and grpc-go's output.
    const GRPC_GO_ENCODE_TABLE: [(Duration, &str); 10] = [
        (Duration::from_nanos(12_345_678), "12345678n"),
        (Duration::from_nanos(123_456_789), "123457u"),
        (Duration::from_micros(12_345_678), "12345678u"),
        (Duration::from_micros(123_456_789), "123457m"),
        (Duration::from_millis(12_345_678), "12345678m"),
        (Duration::from_millis(123_456_789), "123457S"),
        (Duration::from_secs(12_345_678), "12345678S"),
        (Duration::from_secs(123_456_789), "2057614M"),
        (Duration::from_secs(12_345_678 * 60), "12345678M"),
        (Duration::from_secs(123_456_789 * 60), "2057614H"),
    ];

    #[test]
    fn encode_is_byte_equal_to_grpc_go_on_its_own_table() {
        for (budget, go) in GRPC_GO_ENCODE_TABLE {
            assert_eq!(grpc_timeout::encode(budget), go, "{budget:?}");
        }
    }

    #[test]
    fn a_spent_budget_encodes_as_0n_and_a_positive_one_never_as_zero() {
        assert_eq!(grpc_timeout::encode(Duration::ZERO), "0n");
        assert_eq!(grpc_timeout::encode(Duration::from_nanos(1)), "1n");
        assert_eq!(grpc_timeout::encode_within(Duration::ZERO), "0n");
        assert_eq!(grpc_timeout::encode_within(Duration::from_nanos(1)), "1n");
    }

    #[test]
    fn budgets_beyond_eight_digits_of_hours_saturate() {
        assert_eq!(grpc_timeout::encode(Duration::MAX), "99999999H");
        assert_eq!(grpc_timeout::encode_within(Duration::MAX), "99999999H");
        assert_eq!(grpc_timeout::decode("99999999H"), Ok(MAX));
    }

    #[test]
    fn decode_reads_every_unit() {
        let cases = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("1234S", Duration::from_secs(1234)),
            ("5m", Duration::from_millis(5)),
            ("7u", Duration::from_micros(7)),
            ("00000009n", Duration::from_nanos(9)),
            ("0n", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(grpc_timeout::decode(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn decode_rejects_what_the_protocol_forbids_with_a_clear_error() {
        let cases: [(&[u8], GrpcTimeoutError); 11] = [
            (b"", GrpcTimeoutError::Empty),
            (b"S", GrpcTimeoutError::NoDigits),
            (b"1", GrpcTimeoutError::UnknownUnit('1')),
            (b"1234x", GrpcTimeoutError::UnknownUnit('x')),
            (b"123456789n", GrpcTimeoutError::TooManyDigits(9)),
            (b"99999999999999999999999H", GrpcTimeoutError::TooManyDigits(23)),
            (b"-1S", GrpcTimeoutError::NotADigit('-')),
            (b"+1S", GrpcTimeoutError::NotADigit('+')),
            (b" 1S", GrpcTimeoutError::NotADigit(' ')),
            (b"1.5S", GrpcTimeoutError::NotADigit('.')),
            ("1\u{661}S".as_bytes(), GrpcTimeoutError::NotAscii),
        ];
        for (text, want) in cases {
            assert_eq!(grpc_timeout::decode(text), Err(want), "{:?}", String::from_utf8_lossy(text));
            assert!(!want.to_string().is_empty());
        }
        assert_eq!(grpc_timeout::decode([0xff, b'S']), Err(GrpcTimeoutError::NotAscii));
    }

    /// The length in nanoseconds of the unit a value was written in.
    fn unit_of(text: &str) -> Duration {
        match text.as_bytes().last() {
            Some(b'n') => Duration::from_nanos(1),
            Some(b'u') => Duration::from_micros(1),
            Some(b'm') => Duration::from_millis(1),
            Some(b'S') => Duration::from_secs(1),
            Some(b'M') => Duration::from_secs(60),
            Some(b'H') => Duration::from_secs(3600),
            _ => unreachable!("encode writes a unit"),
        }
    }

    /// `decode(encode(budget))` is at least `budget`, less than one unit above, in nine bytes.
    fn check_round_up(budget: Duration) -> Result<(), TestCaseError> {
        let text = grpc_timeout::encode(budget);
        let back = grpc_timeout::decode(&text).unwrap();
        prop_assert!(back >= budget, "{text}");
        prop_assert!(back - budget < unit_of(&text), "{text}");
        prop_assert!(text.len() <= 9);
        Ok(())
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_at_least_the_budget_and_under_one_unit_above(nanos in any::<u64>()) {
            check_round_up(Duration::from_nanos(nanos))?;
        }

        #[test]
        fn the_same_holds_up_to_the_largest_value_the_header_can_say(secs in 0..=MAX.as_secs(), sub in 0..1_000_000_000u32) {
            check_round_up(Duration::new(secs, sub).min(MAX))?;
        }

        #[test]
        fn decode_of_encode_within_never_exceeds_the_budget(nanos in any::<u64>()) {
            let budget = Duration::from_nanos(nanos);
            let text = grpc_timeout::encode_within(budget);
            let back = grpc_timeout::decode(&text).unwrap();
            prop_assert!(back <= budget, "{text}");
            prop_assert!(budget - back < unit_of(&text), "{text}");
        }

        #[test]
        fn decode_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = grpc_timeout::decode(&bytes);
        }
    }
}

mod remaining {
    use super::*;

    #[test]
    fn remaining_is_none_without_a_deadline_and_at_most_the_timeout_with_one() {
        assert_eq!(Context::new().remaining(), None);
        assert_eq!(Context::background().remaining(), None);
        let ctx = Context::new().with_timeout(Duration::from_secs(60));
        let left = ctx.remaining().unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));
    }

    #[test]
    fn remaining_is_zero_once_the_deadline_has_passed() {
        let ctx = Context::new().with_timeout(Duration::ZERO);
        assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    }

    #[test]
    fn a_child_inherits_the_parents_remaining_budget() {
        let parent = Context::new().with_timeout(Duration::from_secs(1));
        let child = parent.with_timeout(Duration::from_secs(100));
        assert!(child.remaining().unwrap() <= Duration::from_secs(1));
    }
}

mod trace_context {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(tp.parent_id(), [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(tp.sampled());
    }

    #[test]
    fn traceparent_rejects_what_the_spec_forbids() {
        let bad = [
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceContextError::ForbiddenVersion),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", TraceContextError::ZeroTraceId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", TraceContextError::ZeroParentId),
        ];
        for (text, want) in bad {
            assert_eq!(TraceParent::parse(text), Err(want), "{text}");
        }
        let malformed = [
            "",
            "00",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // version 00 is 55 chars
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // misplaced dash
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // later version: '-' after flags
        ];
        for text in malformed {
            assert!(
                matches!(TraceParent::parse(text), Err(TraceContextError::MalformedTraceParent(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_later_version_keeps_the_fields_it_knows() {
        let tp =
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-not").unwrap();
        assert_eq!(tp.to_string(), VALID, "written back as version 00");
    }

    #[test]
    fn baggage_parses_members_properties_and_percent_escapes() {
        let bag = Baggage::parse("key1 = value1 ;p1;p2=v2,\tkey2=caf%C3%A9").unwrap();
        assert_eq!(bag.iter().collect::<Vec<_>>(), [("key1", "value1"), ("key2", "café")]);
        assert_eq!(bag.to_string(), "key1=value1;p1;p2=v2,key2=caf%C3%A9");
    }

    #[test]
    fn baggage_rejects_malformed_members() {
        for text in [
            "", "a=1,", ",a=1", "a", "=v", "k y=v", "k=v v", "k=\"v\"", "k=%zz", "k=%C3", "k=v;=x", "k=v;a b",
        ] {
            assert!(
                matches!(Baggage::parse(text), Err(TraceContextError::MalformedBaggage { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn baggage_rejects_more_than_the_spec_limits() {
        let many = (0..65).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert_eq!(Baggage::parse(&many), Err(TraceContextError::BaggageTooLarge("64 members")));
        let long = format!("k={}", "v".repeat(8192));
        assert_eq!(Baggage::parse(&long), Err(TraceContextError::BaggageTooLarge("8192 bytes")));
        let most = (0..64).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert_eq!(Baggage::parse(&most).unwrap().len(), 64);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,80}") {
            let _ = TraceParent::parse(&text);
            let _ = Baggage::parse(&text);
        }

        #[test]
        fn baggage_values_round_trip_through_percent_encoding(value in "\\PC{0,20}") {
            let bag = Baggage::new().with("k", &value).unwrap();
            let back = Baggage::parse(&bag.to_string()).unwrap();
            prop_assert_eq!(back.get("k"), Some(value.as_str()));
        }
    }
}

mod carry {
    use super::*;

    static SECRET: Key<String> = Key::new("secret");
    static TENANT: Key<u32> = Key::new("tenant");

    fn tenant_carry() -> Carry {
        Carry::new().with(&TENANT, "x-tenant", u32::to_string, str::parse::<u32>)
    }

    fn injected(carry: &Carry, ctx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        carry.inject(ctx, |name, value| out.push((name, value)));
        out
    }

    #[test]
    fn nothing_crosses_by_default() {
        let ctx = Context::new().with_value(&SECRET, "hunter2".into()).with_value(&TENANT, 7);
        assert!(injected(&Carry::new(), &ctx).is_empty());
        assert!(injected(&Carry::trace_context(), &ctx).is_empty(), "only the W3C keys are registered there");
    }

    #[test]
    fn only_registered_keys_cross() {
        let ctx = Context::new().with_value(&SECRET, "hunter2".into()).with_value(&TENANT, 7);
        assert_eq!(injected(&tenant_carry(), &ctx), [("x-tenant", "7".to_string())]);
    }

    #[test]
    fn a_rejected_value_is_reported_and_not_bound_and_the_others_still_are() {
        let carry =
            tenant_carry().with(&TRACE_PARENT, "traceparent", ToString::to_string, TraceParent::parse);
        let (ctx, errors) = carry.extract(&Context::new(), |name| match name {
            "x-tenant" => Some(b"not a number".as_slice()),
            "traceparent" => Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice()),
            _ => None,
        });
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].header(), "x-tenant");
        assert_eq!(ctx.value(&TENANT), None);
        assert!(ctx.value(&TRACE_PARENT).is_some());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_reported() {
        let (_, errors) = tenant_carry().extract(&Context::new(), |_| Some([0xff, 0xfe].as_slice()));
        assert_eq!(errors[0].to_string(), "header x-tenant: the value is not UTF-8");
    }

    #[test]
    fn trace_context_round_trips_through_the_carry() {
        let tp = TraceParent::new([9; 16], [8; 8], 1).unwrap();
        let bag = Baggage::new().with("user", "ada lovelace").unwrap();
        let ctx = Context::new().with_value(&TRACE_PARENT, tp).with_value(&BAGGAGE, bag.clone());
        let sent = injected(&Carry::trace_context(), &ctx);
        let (server, errors) = Carry::trace_context().extract(&Context::new(), |name| {
            sent.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
        });
        assert!(errors.is_empty());
        assert_eq!(server.value(&TRACE_PARENT), Some(&tp));
        assert_eq!(server.value(&BAGGAGE), Some(&bag));
    }

    #[test]
    #[should_panic(expected = "tether: carried header name \"X-Tenant\" is not a lowercase token")]
    fn an_uppercase_header_name_is_refused() {
        let _ = Carry::new().with(&TENANT, "X-Tenant", u32::to_string, str::parse::<u32>);
    }
}
