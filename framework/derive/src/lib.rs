//! `#[derive(Event)]` for [Choreograph](https://docs.rs/choreograph): declares an event's
//! CloudEvents type, its topic and its place in the choreography on the Rust type itself.
//!
//! Use it through the framework, which re-exports it as `choreograph::Event` (the derive shares
//! the trait's name, as serde's `Serialize` does); this crate is an implementation detail.
//! The attribute's reference, with tested examples, is the framework's documentation of the
//! derive (`choreograph::event::Event`).

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{parse_macro_input, DeriveInput, Expr, ExprLit, Lit, LitStr, Token};

/// The derive itself: the framework documents the attribute, with tested examples, where it
/// re-exports it (`choreograph::Event`, the derive macro).
///
/// Keys: `type` and `topic` (required), `producer`, `consumers`, `ends_saga`, `crate`. Checked
/// at compile time: the key set, the type's file-name safety, Kafka's topic rule (a topic
/// given as an expression by a constant assertion), service names, no generics.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// What `#[event(...)]` says.
#[derive(Default)]
struct Args {
    event_type: Option<LitStr>,
    topic: Option<Expr>,
    producer: Option<LitStr>,
    consumers: Option<Vec<LitStr>>,
    ends_saga: Option<(LitStr, &'static str)>,
    krate: Option<syn::Path>,
}

const KEYS: &str = "`type`, `topic`, `producer`, `consumers`, `ends_saga`, `crate`";
const ATTRIBUTE: &str =
    "#[event(type = \"<domain>.<entity>.<what-happened>.v1\", topic = \"<topic>\", ...)]";

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let mut errors = Errors::default();
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            "#[derive(Event)] does not support generic types: an event type is one concrete \
             contract (one CloudEvents type, one schema); derive it on a concrete type",
        ));
    }
    let mut args = Args::default();
    let mut seen_attribute = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        seen_attribute = true;
        if let Err(e) = attr.parse_nested_meta(|meta| parse_key(&mut args, &mut errors, meta)) {
            errors.push(e);
        }
    }
    if !seen_attribute {
        errors.push(syn::Error::new(
            input.ident.span(),
            format!("#[derive(Event)] needs an attribute: {ATTRIBUTE}"),
        ));
        return Err(errors.finish().unwrap_err());
    }
    let missing = |key: &str, example: &str| {
        syn::Error::new(
            input.ident.span(),
            format!("#[event(...)] is missing `{key}` (e.g. `{key} = {example}`)"),
        )
    };
    if args.event_type.is_none() {
        errors.push(missing("type", "\"orders.order.placed.v1\""));
    }
    if args.topic.is_none() {
        errors.push(missing("topic", "\"orders.order\""));
    }
    errors.finish()?;
    let (Some(event_type), Some(topic)) = (args.event_type, args.topic) else {
        unreachable!("checked above");
    };

    let ident = &input.ident;
    let krate = args
        .krate
        .map(|p| p.into_token_stream())
        .unwrap_or_else(|| quote!(::choreograph));
    let producer = match args.producer {
        Some(p) => quote!(::core::option::Option::Some(#p)),
        None => quote!(::core::option::Option::None),
    };
    let consumers = args.consumers.unwrap_or_default();
    let ends_saga = match args.ends_saga {
        Some((lit, variant)) => {
            let variant = syn::Ident::new(variant, lit.span());
            quote!(::core::option::Option::Some(#krate::SagaOutcome::#variant))
        }
        None => quote!(::core::option::Option::None),
    };
    // A topic given as an expression is checked when it is evaluated, at compile time.
    // Every token of the check carries the topic's span, so that a failure points at it.
    let topic_check = (!is_str_literal(&topic)).then(|| {
        let span = topic.span();
        let krate = respan(krate.clone(), span);
        let mut ident = ident.clone();
        ident.set_span(span);
        quote_spanned! {span=>
            const _: () = #krate::event::__private::assert_topic(
                <#ident as #krate::Event>::TOPIC,
            );
        }
    });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Event for #ident #ty_generics #where_clause {
            const TYPE: &'static str = #event_type;
            const TOPIC: &'static str = #topic;
            const PRODUCER: ::core::option::Option<&'static str> = #producer;
            const CONSUMERS: &'static [&'static str] = &[#(#consumers),*];
            const ENDS_SAGA: ::core::option::Option<#krate::SagaOutcome> = #ends_saga;
        }
        #topic_check
    })
}

/// Parses one `key = value` of `#[event(...)]`. Errors in values are collected (so that one
/// compilation reports them all); errors in the syntax stop the attribute.
fn parse_key(
    args: &mut Args,
    errors: &mut Errors,
    meta: syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let path = &meta.path;
    let key = path
        .get_ident()
        .map(|i| i.to_string())
        .unwrap_or_else(|| path.to_token_stream().to_string().replace(' ', ""));
    let duplicate = || syn::Error::new_spanned(path, format!("duplicate key `{key}` in #[event]"));
    match key.as_str() {
        "type" => {
            let lit = parse_str_value(&meta, "type")?;
            if args.event_type.is_some() {
                errors.push(duplicate());
            } else if let Err(reason) = check_event_type(&lit.value()) {
                errors.push(syn::Error::new(lit.span(), reason));
            }
            args.event_type.get_or_insert(lit);
        }
        "topic" => {
            let expr: Expr = meta.value()?.parse()?;
            if args.topic.is_some() {
                errors.push(duplicate());
            } else if let Some(lit) = str_literal(&expr) {
                if let Err(reason) = check_topic(&lit.value()) {
                    errors.push(syn::Error::new(lit.span(), reason));
                }
            } else if let Expr::Lit(other) = &expr {
                errors.push(syn::Error::new_spanned(
                    other,
                    "`topic` is a string literal or a `&str` constant (e.g. `topics::ORDER`)",
                ));
            }
            args.topic.get_or_insert(expr);
        }
        "producer" => {
            let lit = parse_str_value(&meta, "producer")?;
            if args.producer.is_some() {
                errors.push(duplicate());
            } else if let Err(reason) = check_service("producer", &lit.value()) {
                errors.push(syn::Error::new(lit.span(), reason));
            }
            args.producer.get_or_insert(lit);
        }
        "consumers" => {
            let value = meta.value()?;
            let content;
            if !value.peek(syn::token::Bracket) {
                return Err(value.error(
                    "`consumers` is a list of service names in brackets: `consumers = [\"a\", \"b\"]`",
                ));
            }
            syn::bracketed!(content in value);
            let list =
                syn::punctuated::Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
            let list: Vec<LitStr> = list.into_iter().collect();
            if args.consumers.is_some() {
                errors.push(duplicate());
            } else {
                for (i, c) in list.iter().enumerate() {
                    if let Err(reason) = check_service("consumer", &c.value()) {
                        errors.push(syn::Error::new(c.span(), reason));
                    } else if list[..i].iter().any(|d| d.value() == c.value()) {
                        errors.push(syn::Error::new(
                            c.span(),
                            format!("consumer `{}` is listed twice", c.value()),
                        ));
                    }
                }
            }
            args.consumers.get_or_insert(list);
        }
        "ends_saga" => {
            let lit = parse_str_value(&meta, "ends_saga")?;
            let variant = match lit.value().as_str() {
                "completed" => Some("Completed"),
                "failed" => Some("Failed"),
                "compensated" => Some("Compensated"),
                _ => None,
            };
            if args.ends_saga.is_some() {
                errors.push(duplicate());
            } else if variant.is_none() {
                errors.push(syn::Error::new(
                    lit.span(),
                    format!(
                        "`ends_saga` is \"completed\", \"failed\" or \"compensated\", not {:?}",
                        lit.value()
                    ),
                ));
            }
            if let (None, Some(variant)) = (&args.ends_saga, variant) {
                args.ends_saga = Some((lit, variant));
            }
        }
        "crate" => {
            let lit = parse_str_value(&meta, "crate")?;
            if args.krate.is_some() {
                errors.push(duplicate());
            } else {
                match lit.parse::<syn::Path>() {
                    Ok(p) => args.krate = Some(p),
                    Err(_) => errors.push(syn::Error::new(
                        lit.span(),
                        "`crate` is the path of the choreograph crate, e.g. `crate = \"my_framework::choreograph\"`",
                    )),
                }
            }
        }
        "ends-saga" | "endsSaga" | "ends" => {
            return Err(syn::Error::new_spanned(
                path,
                format!("unknown key `{key}` in #[event]: did you mean `ends_saga`?"),
            ))
        }
        _ => {
            return Err(syn::Error::new_spanned(
                path,
                format!("unknown key `{key}` in #[event]; the keys are {KEYS}"),
            ))
        }
    }
    Ok(())
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream2, span: proc_macro2::Span) -> TokenStream2 {
    use proc_macro2::TokenTree;
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// `key = "string"`.
fn parse_str_value(meta: &syn::meta::ParseNestedMeta<'_>, key: &str) -> syn::Result<LitStr> {
    let value = meta.value()?;
    let expr: Expr = value.parse()?;
    str_literal(&expr).cloned().ok_or_else(|| {
        syn::Error::new_spanned(
            &expr,
            format!("`{key}` is a string literal: `{key} = \"...\"`"),
        )
    })
}

fn str_literal(expr: &Expr) -> Option<&LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s),
        Expr::Group(g) => str_literal(&g.expr),
        _ => None,
    }
}

fn is_str_literal(expr: &Expr) -> bool {
    str_literal(expr).is_some()
}

/// The CloudEvents `type`: non-empty (the envelope refuses an empty one) and usable as the
/// name of its schema file, `<type>.json`.
fn check_event_type(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err(
            "the event `type` is empty: a CloudEvents type is a non-empty string, \
                    e.g. \"orders.order.placed.v1\""
                .into(),
        );
    }
    if let Some(c) = t
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/' || *c == '\\')
    {
        return Err(format!(
            "the event `type` {t:?} holds {c:?}: no whitespace, control characters, `/` or `\\` \
             (its schema file is `<type>.json`), e.g. \"orders.order.placed.v1\""
        ));
    }
    if t == "." || t == ".." {
        return Err(format!("the event `type` {t:?} is not a usable file name"));
    }
    Ok(())
}

/// Kafka's rule for topic names (the same as the framework's `event::__private::assert_topic`).
fn check_topic(t: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if t.is_empty() || t.len() > 249 || t == "." || t == ".." || !t.chars().all(legal) {
        return Err(format!(
            "the topic {t:?} is not a Kafka topic name: 1 to 249 ASCII letters, digits, `.`, `_` \
             or `-`, and not `.` or `..`"
        ));
    }
    Ok(())
}

/// The framework's rule for service names.
fn check_service(role: &str, name: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(legal) {
        return Err(format!(
            "the {role} {name:?} is not a service name: ASCII letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// Errors collected so that one compilation reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(&mut self) -> syn::Result<()> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(input: DeriveInput) -> Result<String, Vec<String>> {
        expand(&input)
            .map(|t| t.to_string())
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    fn errors(input: DeriveInput) -> Vec<String> {
        expand_str(input).expect_err("the derive should refuse this input")
    }

    #[test]
    fn expands_every_key() {
        let out = expand_str(syn::parse_quote! {
            #[event(type = "orders.order.placed.v1", topic = "orders.order", producer = "orders",
                    consumers = ["payments", "shipping"], ends_saga = "completed")]
            struct OrderPlaced { id: String }
        })
        .unwrap();
        let squashed = out.replace(' ', "");
        for part in [
            "impl::choreograph::EventforOrderPlaced",
            "constTYPE:&'staticstr=\"orders.order.placed.v1\";",
            "constTOPIC:&'staticstr=\"orders.order\";",
            "::core::option::Option::Some(\"orders\")",
            "constCONSUMERS:&'static[&'staticstr]=&[\"payments\",\"shipping\"];",
            "::core::option::Option::Some(::choreograph::SagaOutcome::Completed)",
        ] {
            assert!(squashed.contains(part), "{part} not in {out}");
        }
        assert!(!squashed.contains("assert_topic"), "{out}");
    }

    #[test]
    fn defaults_and_a_topic_constant() {
        let out = expand_str(syn::parse_quote! {
            #[event(type = "t.v1", topic = topics::USER, crate = "my::choreograph")]
            enum E { A }
        })
        .unwrap()
        .replace(' ', "");
        assert!(out.contains("implmy::choreograph::EventforE"), "{out}");
        assert!(
            out.contains("constTOPIC:&'staticstr=topics::USER;"),
            "{out}"
        );
        assert!(
            out.contains(
                "constPRODUCER:::core::option::Option<&'staticstr>=::core::option::Option::None;"
            ),
            "{out}"
        );
        assert!(
            out.contains("constCONSUMERS:&'static[&'staticstr]=&[];"),
            "{out}"
        );
        assert!(
            out.contains("my::choreograph::event::__private::assert_topic(<Easmy::choreograph::Event>::TOPIC,)"),
            "{out}"
        );
    }

    #[test]
    fn refuses_a_missing_attribute_or_keys() {
        let e = errors(syn::parse_quote! { struct A; });
        assert!(e[0].contains("needs an attribute"), "{e:?}");
        let e = errors(syn::parse_quote! { #[event(producer = "a")] struct A; });
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("missing `type`"), "{e:?}");
        assert!(e[1].contains("missing `topic`"), "{e:?}");
    }

    #[test]
    fn refuses_unknown_and_duplicate_keys() {
        let e = errors(
            syn::parse_quote! { #[event(type = "a.v1", topic = "a", colour = "red")] struct A; },
        );
        assert!(
            e[0].contains("unknown key `colour`") && e[0].contains("`ends_saga`"),
            "{e:?}"
        );
        let e = errors(
            syn::parse_quote! { #[event(type = "a.v1", topic = "a", ends = "failed")] struct A; },
        );
        assert!(e[0].contains("did you mean `ends_saga`"), "{e:?}");
        let e = errors(syn::parse_quote! {
            #[event(type = "a.v1", topic = "a")]
            #[event(type = "b.v1")]
            struct A;
        });
        assert_eq!(e, ["duplicate key `type` in #[event]"]);
        let e = errors(
            syn::parse_quote! { #[event(type = "a.v1", topic = "a", topic = "b")] struct A; },
        );
        assert_eq!(e, ["duplicate key `topic` in #[event]"]);
    }

    #[test]
    fn refuses_bad_values() {
        let e = errors(syn::parse_quote! {
            #[event(type = "", topic = "a b", producer = "the user", consumers = ["x", "x", ""],
                    ends_saga = "done")]
            struct A;
        });
        assert_eq!(e.len(), 6, "{e:?}");
        assert!(e[0].contains("`type` is empty"), "{e:?}");
        assert!(e[1].contains("not a Kafka topic name"), "{e:?}");
        assert!(
            e[2].contains("producer \"the user\" is not a service name"),
            "{e:?}"
        );
        assert!(e[3].contains("consumer `x` is listed twice"), "{e:?}");
        assert!(
            e[4].contains("consumer \"\" is not a service name"),
            "{e:?}"
        );
        assert!(
            e[5].contains("\"completed\", \"failed\" or \"compensated\", not \"done\""),
            "{e:?}"
        );
        let e = errors(syn::parse_quote! { #[event(type = "a/b.v1", topic = "a")] struct A; });
        assert!(e[0].contains("holds '/'"), "{e:?}");
        let e = errors(syn::parse_quote! { #[event(type = a::B, topic = "a")] struct A; });
        assert!(e[0].contains("`type` is a string literal"), "{e:?}");
        let e = errors(syn::parse_quote! { #[event(type = "a.v1", topic = 7)] struct A; });
        assert!(
            e[0].contains("`topic` is a string literal or a `&str` constant"),
            "{e:?}"
        );
        let e = errors(
            syn::parse_quote! { #[event(type = "a.v1", topic = "a", consumers = "b")] struct A; },
        );
        assert!(e[0].contains("in brackets"), "{e:?}");
        let long = "t".repeat(250);
        let e = errors(syn::parse_quote! { #[event(type = "a.v1", topic = #long)] struct A; });
        assert!(e[0].contains("1 to 249"), "{e:?}");
    }

    #[test]
    fn refuses_generics() {
        let e = errors(syn::parse_quote! {
            #[event(type = "a.v1", topic = "a")]
            struct A<T> { t: T }
        });
        assert!(e[0].contains("does not support generic types"), "{e:?}");
        let e = errors(syn::parse_quote! {
            #[event(type = "a.v1", topic = "a")]
            struct A<'a> { t: &'a str }
        });
        assert!(e[0].contains("does not support generic types"), "{e:?}");
    }
}
