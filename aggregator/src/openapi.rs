//! The OpenAPI 3.1 description of the HTTP API, served at /v1/openapi.json.
//!
//! Generated (utoipa) from the handlers' `#[utoipa::path]` attributes and the wire types of
//! `api.rs`: parameters, bodies, responses and their schemas are the ones the handlers use.
//! What the layers add is added here from the same facts the router is built from: 429
//! wherever the rate limit applies (not on [`PROBES`]), 408 on timed routes. So is what
//! depends on the configuration: how admin operations are authorized (the admin token, or
//! with none configured the loopback rule) and whether anyone may follow a feed.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::OpenApi;

use crate::api;
use crate::config::Config;
use crate::error::{Code, ErrorBody, ErrorDetail};
use crate::http::{self, PROBES};

/// The name of the admin security scheme.
const ADMIN: &str = "adminToken";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Apiary aggregator",
        description = "A merged, searchable feed of followed Hyperbees.\n\n\
            Every error is `{\"error\": {\"code\", \"message\"}}` (schema `ErrorBody`), from the \
            handlers and from the layers alike: 429 over the per-client rate limit (not on \
            /healthz and /readyz), 408 when a response does not start within the request \
            timeout (not on /v1/admin/backup), 404 for an unknown path, 405 (with `Allow`) for \
            a method a path does not take.\n\n\
            Admin operations (follow, unfollow, backup) need the admin token as \
            `Authorization: Bearer TOKEN`; on a server with no token configured, only clients \
            on loopback may call them (others get 401), and this description then lists no \
            security requirement for them.",
    ),
    paths(
        http::page,
        http::healthz,
        http::readyz,
        http::metrics,
        http::openapi_json,
        http::read::list_feeds,
        http::add_feed,
        http::read::get_feed,
        http::remove_feed,
        http::read::merged_feed,
        http::read::search,
        http::read::entry,
        http::proofs::proof,
        http::live::stream,
        http::backup,
    ),
    components(schemas(ErrorBody, ErrorDetail, Code, api::BeeKey, api::PeerAddr, api::TimeBound,
        api::FeedCursor, api::SearchCursor)),
    tags(
        (name = "feeds", description = "Reading: the merged feed, search, entries, feed status"),
        (name = "admin", description = "Following, unfollowing, backups"),
        (name = "operations", description = "Health, readiness, metrics, this description"),
        (name = "page", description = "The browse page"),
    )
)]
struct ApiDoc;

/// The description for a server with this configuration, as served.
pub fn document(cfg: &Config) -> serde_json::Value {
    let mut v = serde_json::to_value(description(cfg)).unwrap_or_default();
    spell_links(&mut v);
    v
}

/// utoipa 5 writes a link's `operationId` as `operation_id` (fixed in utoipa 6, which needs a
/// newer Rust than ours); clients and schemathesis look for `operationId`.
fn spell_links(v: &mut serde_json::Value) {
    let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links").and_then(|l| l.as_object_mut()))
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        if let Some(id) = link.remove("operation_id") {
            link.insert("operationId".into(), id);
        }
        if let Some(r) = link.remove("operation_ref") {
            link.insert("operationRef".into(), r);
        }
        if let Some(b) = link.remove("request_body") {
            link.insert("requestBody".into(), b);
        }
    }
}

/// The description as utoipa builds it.
fn description(cfg: &Config) -> Document {
    let mut doc = ApiDoc::openapi();
    let timed: Vec<(String, bool)> = http::routes()
        .iter()
        .map(|r| (openapi_path(r.path), r.timed))
        .collect();
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        ADMIN.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The `admin_token` of the server's configuration. With none configured, \
                     admin operations are open to clients on loopback only.",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let is_timed = timed.iter().any(|(p, t)| p == path && *t);
        let limited = !PROBES.contains(&path.as_str());
        for op in operations(item) {
            if limited {
                add_error(op, 429, "Over the per-client rate limit");
            }
            if is_timed {
                add_error(
                    op,
                    408,
                    "The response did not start within the request timeout",
                );
            }
            authorization(op, cfg, path);
        }
    }
    doc
}

/// How this server authorizes an admin operation (one whose attribute names [`ADMIN`]).
fn authorization(op: &mut Operation, cfg: &Config, path: &str) {
    let admin = op
        .security
        .as_ref()
        .is_some_and(|s| serde_json::to_value(s).is_ok_and(|v| v.to_string().contains(ADMIN)));
    if !admin {
        return;
    }
    let open = cfg.open_registration && path == "/v1/feeds";
    let note = match (cfg.admin_token.is_some(), open) {
        (true, false) => "Admin: needs the admin token.",
        (true, true) => {
            "Admin, or anyone: registration is open on this server (per client, \
             `registrations_per_hour`; over it 429)."
        }
        (false, false) => {
            "Admin: no admin token is configured on this server, so only clients on loopback \
             may call this (others get 401); no credentials are needed or read."
        }
        (false, true) => {
            "Open to anyone: registration is open on this server (per client, \
             `registrations_per_hour`; over it 429); no credentials are needed or read."
        }
    };
    op.description = Some(match op.description.take() {
        Some(d) => format!("{d}\n\n{note}"),
        None => note.into(),
    });
    op.security = match (cfg.admin_token.is_some(), open) {
        (true, false) => op.security.take(),
        // The token is optional: a request without one is a registration.
        (true, true) => Some(vec![
            SecurityRequirement::new(ADMIN, Vec::<String>::new()),
            SecurityRequirement::default(),
        ]),
        // Nothing a client sends changes the answer.
        (false, _) => Some(Vec::new()),
    };
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.put.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_error(op: &mut Operation, status: u16, description: &str) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert(response.into());
}

/// axum's `{*rest}` (the rest of the path) is `{rest}` in OpenAPI, which has no such syntax.
pub(crate) fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeSet;

    use axum::http::Method;
    use serde_json::{json, Value};

    use super::*;
    use crate::http::tests::{app, call, KEY, LOOPBACK};

    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];

    /// `(method, path)` of every operation of the description.
    fn operations_of(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in METHODS {
                if item.get(m.as_str().to_lowercase()).is_some() {
                    ops.insert((m.to_string(), path.clone()));
                }
            }
        }
        ops
    }

    /// The router answers each route with every method and the description has exactly the
    /// routes and methods that are not 405 (so neither can gain one the other lacks).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_and_description_agree() {
        let (_d, _agg, r) = app(|_| {}).await;
        let mut routed = BTreeSet::new();
        for route in http::routes() {
            let uri = route
                .path
                .replace("{key}", KEY)
                .replace("{feed}", KEY)
                .replace("{*key}", "a/b");
            for m in METHODS {
                let (status, _, body) = call(&r, LOOPBACK, m.clone(), &uri, None).await;
                let fallback = body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no such endpoint"));
                assert!(!fallback, "{m} {uri}: {body}");
                if status != 405 {
                    routed.insert((m.to_string(), openapi_path(route.path)));
                }
            }
        }
        let doc = document(&Config::default());
        assert_eq!(routed, operations_of(&doc));
    }

    fn op<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
        &doc["paths"][path][method]
    }

    #[test]
    fn admin_security_follows_the_configuration() {
        let admin = [
            ("post", "/v1/feeds"),
            ("delete", "/v1/feeds/{key}"),
            ("post", "/v1/admin/backup"),
        ];
        let token = Config {
            admin_token: Some("t".into()),
            ..Config::default()
        };
        let doc = document(&token);
        assert!(doc["components"]["securitySchemes"][ADMIN]["scheme"] == "bearer");
        for (m, p) in admin {
            assert_eq!(op(&doc, m, p)["security"], json!([{ADMIN: []}]), "{m} {p}");
        }
        // No token: the loopback rule, and nothing a client could send.
        let doc = document(&Config::default());
        for (m, p) in admin {
            let o = op(&doc, m, p);
            assert_eq!(o["security"], json!([]), "{m} {p}");
            assert!(
                o["description"].as_str().unwrap().contains("loopback"),
                "{m} {p}"
            );
            assert!(o["responses"]["401"].is_object(), "{m} {p}");
        }
        // Open registration: following needs no token, the rest still does.
        let open = Config {
            open_registration: true,
            ..token
        };
        let doc = document(&open);
        assert_eq!(
            op(&doc, "post", "/v1/feeds")["security"],
            json!([{ADMIN: []}, {}])
        );
        assert_eq!(
            op(&doc, "delete", "/v1/feeds/{key}")["security"],
            json!([{ADMIN: []}])
        );
        // Reading never needs it.
        assert!(op(&doc, "get", "/v1/feeds")["security"].is_null());
    }

    #[test]
    fn layer_errors_are_documented_where_the_layers_apply() {
        let doc = document(&Config::default());
        for (m, p) in operations_of(&doc) {
            let responses = &op(&doc, &m.to_lowercase(), &p)["responses"];
            let probe = PROBES.contains(&p.as_str());
            assert_eq!(responses["429"].is_object(), !probe, "{m} {p}");
            assert_eq!(
                responses["408"].is_object(),
                p != "/v1/admin/backup",
                "{m} {p}"
            );
            for (status, r) in responses.as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') && p != "/readyz" {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{m} {p} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn links_name_their_operations() {
        let doc = document(&Config::default());
        let link = &op(&doc, "get", "/v1/feed")["responses"]["200"]["links"]["FirstEntry"];
        assert_eq!(link["operationId"], "entry");
        assert!(link.get("operation_id").is_none());
        let ids: BTreeSet<&str> = operations_of(&doc)
            .iter()
            .filter_map(|(m, p)| op(&doc, &m.to_lowercase(), p)["operationId"].as_str())
            .collect();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, o) in item.as_object().unwrap() {
                for (_, r) in o["responses"].as_object().into_iter().flatten() {
                    for (_, l) in r["links"].as_object().into_iter().flatten() {
                        assert!(ids.contains(l["operationId"].as_str().unwrap()), "{l}");
                    }
                }
            }
        }
    }
}
