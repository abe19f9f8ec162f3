//! The REST contract: users, tokens, chats, history, groups, media, search, errors.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::{alg_none_token, sign_claims, TestServer};

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn register_validates_and_refuses_duplicates() {
    let s = TestServer::start().await;
    let ok = json!({"userName": "Ann", "email": "Ann@Example.com", "phoneNumber": "+15550000001", "password": "123456"});
    let (st, body) = s.post("/user/register", None, ok.clone()).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(body["userId"].as_i64().is_some());
    assert_eq!((body["userName"].clone(), body["email"].clone(), body["phoneNumber"].clone()), (json!("Ann"), json!("Ann@Example.com"), json!("+15550000001")));
    assert!(body.get("password").is_none() && body.get("passwordHash").is_none());

    let mut dup_email = ok.clone();
    dup_email["email"] = json!("ann@example.COM");
    dup_email["phoneNumber"] = json!("+15550000002");
    let (st, body) = s.post("/user/register", None, dup_email).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_error(&body, "conflict");
    let mut dup_phone = ok.clone();
    dup_phone["email"] = json!("other@example.com");
    let (st, _) = s.post("/user/register", None, dup_phone).await;
    assert_eq!(st, StatusCode::CONFLICT);

    for (field, bad) in [("email", json!("not-an-email")), ("phoneNumber", json!("12")), ("userName", json!("  ")), ("password", json!("12345"))] {
        let mut b = ok.clone();
        b[field] = bad;
        b["email"] = if field == "email" { b["email"].clone() } else { json!(format!("{field}@example.com")) };
        let (st, body) = s.post("/user/register", None, b).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{field}");
        assert_error(&body, "invalid_request");
    }
    let (st, body) = s.post("/user/register", None, json!({"userName": "x"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&body, "malformed_json");
    let huge = json!({"userName": "x".repeat(100_000), "email": "big@example.com", "phoneNumber": "+15550000009", "password": "123456"});
    let (st, body) = s.post("/user/register", None, huge).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&body, "payload_too_large");
    let res = s.raw(Method::POST, "/user/register").header("content-type", "application/json").body("{nope").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_error(&res.json().await.unwrap(), "malformed_json");
}

#[tokio::test]
async fn login_is_the_same_401_for_unknown_email_and_wrong_password() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let (st1, b1) = s.post("/user/login", None, json!({"email": a.email, "password": "wrong!"})).await;
    let (st2, b2) = s.post("/user/login", None, json!({"email": "nobody@example.com", "password": "123456"})).await;
    assert_eq!((st1, st2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(b1, b2);
    let (st, body) = s.post("/user/login", None, json!({"email": a.email, "password": "123456"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["userId"], a.id);
    assert!(body["expiresIn"].as_i64().unwrap() > 0);
    assert!(body["token"].is_string() && body["refreshToken"].is_string());
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_email_for_a_while() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    for _ in 0..10 {
        let (st, _) = s.post("/user/login", None, json!({"email": a.email, "password": "nope!!"})).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, body) = s.post("/user/login", None, json!({"email": a.email.to_uppercase(), "password": "123456"})).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_error(&body, "too_many_attempts");
    // Other accounts are unaffected.
    let (st, _) = s.post("/user/login", None, json!({"email": b.email, "password": "123456"})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_is_refused() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let (st, pair) = s.post("/user/refresh", None, json!({"refreshToken": a.refresh})).await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(pair["refreshToken"], json!(a.refresh));
    let (st, _) = s.get(&format!("/user/{}", a.id), pair["token"].as_str().unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.post("/user/refresh", None, json!({"refreshToken": a.refresh})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_error(&body, "refresh_token_reused");
    // Reuse revokes the session: the rotated token is dead too.
    let (st, _) = s.post("/user/refresh", None, json!({"refreshToken": pair["refreshToken"]})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // An access token is not a refresh token.
    let (st, _) = s.post("/user/refresh", None, json!({"refreshToken": a.token})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_tokens_are_401_on_rest_and_before_the_ws_upgrade() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let now = switchboard_core::time::now_secs();
    let expired = sign_claims(&json!({"sub": a.id, "dev": "d", "typ": "access", "jti": "j", "iat": now - 100, "exp": now - 10}));
    let forged = testkit::sign_claims_with(
        b"another-secret-another-secret-0123456789",
        &json!({"sub": a.id, "dev": "d", "typ": "access", "jti": "j", "iat": now, "exp": now + 600}),
    );
    let path = format!("/user/{}", a.id);
    let (st, body) = s.call(Method::GET, &path, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthenticated");
    for (token, code) in [(expired.as_str(), "token_expired"), (forged.as_str(), "invalid_token"), (&alg_none_token(a.id), "invalid_token"), ("garbage", "invalid_token"), (&a.refresh, "invalid_token")] {
        let (st, body) = s.get(&path, token).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{token}");
        assert_error(&body, code);
        assert_eq!(s.ws_connect("/ws", Some(token), &[]).await.err(), Some(401));
    }
    assert_eq!(s.ws_connect("/ws", None, &[]).await.err(), Some(401));
}

#[tokio::test]
async fn ws_token_via_query_and_subprotocol_on_both_paths() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let mut via_query = s.ws_connect(&format!("/messages/send?token={}", a.token), None, &[]).await.unwrap();
    via_query.until_synced().await;
    let proto = format!("switchboard.v1, bearer.{}", b.token);
    let mut via_proto = s.ws_connect("/ws", None, &[("sec-websocket-protocol", &proto)]).await.unwrap();
    assert_eq!(via_proto.protocol.as_deref(), Some("switchboard.v1"));
    via_proto.until_synced().await;
    via_query.send(json!({"senderId": a.id, "receiverId": b.id, "message": "seed path"})).await;
    assert_eq!(via_proto.next_of("message").await["message"], "seed path");
    // Not a WebSocket request at all.
    let (st, body) = s.get("/ws", &a.token).await;
    assert_eq!(st, StatusCode::UPGRADE_REQUIRED);
    assert_error(&body, "upgrade_required");
}

#[tokio::test]
async fn profile_is_public_without_secrets_and_shows_presence() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (st, p) = s.get(&format!("/user/{}", b.id), &a.token).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!((p["userId"].clone(), p["userName"].clone(), p["online"].clone()), (json!(b.id), json!("bob"), json!(false)));
    assert!(p.get("email").is_none() && p.get("password").is_none() && p.get("passwordHash").is_none());
    assert!(p.get("phoneNumber").is_some() && p.get("lastSeen").is_some());
    let (wb, _) = s.ws(&b).await;
    assert_eq!(s.get(&format!("/user/{}", b.id), &a.token).await.1["online"], true);
    drop(wb);
    let deadline = tokio::time::Instant::now() + testkit::DEADLINE;
    loop {
        let (_, p) = s.get(&format!("/user/{}", b.id), &a.token).await;
        if p["online"] == false && p["lastSeen"].as_i64().is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never went offline: {p}");
        tokio::task::yield_now().await;
    }
    let (st, body) = s.get("/user/99999", &a.token).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    let (st, body) = s.get("/user/abc", &a.token).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_request");
}

#[tokio::test]
async fn update_and_delete_are_self_only_and_delete_revokes_every_token() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (st, body) = s.call(Method::PUT, &format!("/user/{}", b.id), Some(&a.token), Some(json!({"userName": "evil"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_error(&body, "forbidden");
    let (st, body) = s.call(Method::PUT, &format!("/user/{}", a.id), Some(&a.token), Some(json!({"userName": "Annie", "password": "newpass"}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["userName"], "Annie");
    s.login(&a.email, "newpass").await;
    let (st, _) = s.post("/user/login", None, json!({"email": a.email, "password": "123456"})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.call(Method::PUT, &format!("/user/{}", a.id), Some(&a.token), Some(json!({"email": b.email}))).await;
    assert_eq!(st, StatusCode::CONFLICT);

    let (st, _) = s.call(Method::DELETE, &format!("/user/{}", b.id), Some(&a.token), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (mut wb, _) = s.ws(&b).await;
    let (st, _) = s.call(Method::DELETE, &format!("/user/{}", b.id), Some(&b.token), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(wb.closed().await, testkit::Closed::Code(1008));
    let (st, body) = s.get(&format!("/user/{}", a.id), &b.token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_error(&body, "token_revoked");
    assert_eq!(s.ws_connect("/ws", Some(&b.token), &[]).await.err(), Some(401));
    let (st, _) = s.post("/user/refresh", None, json!({"refreshToken": b.refresh})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.get(&format!("/user/{}", b.id), &a.token).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Revocation survives a restart.
    let tmp = s.stop().await;
    let s2 = TestServer::start_in(tmp.as_ref().unwrap().path(), |_| {}).await;
    let (st, _) = s2.get(&format!("/user/{}", a.id), &b.token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s2.stop().await;
}

async fn send_n(s: &TestServer, from: &testkit::TestUser, to: Value, n: usize, prefix: &str) -> Vec<Value> {
    let (mut w, _) = s.ws(from).await;
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(w.send_msg(&format!("{prefix}{i}"), to.clone(), &format!("{prefix} {i}")).await);
    }
    acks
}

#[tokio::test]
async fn direct_history_pages_backwards_in_conversation_order() {
    let s = TestServer::start().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cid").await);
    send_n(&s, &a, json!({"receiverId": b.id}), 7, "h").await;
    let path = format!("/messages/{}/{}", b.id, a.id);
    let (st, p1) = s.get(&format!("{path}?limit=3"), &b.token).await;
    assert_eq!(st, StatusCode::OK);
    let seqs = |p: &Value| p["messages"].as_array().unwrap().iter().map(|m| m["conversationSeq"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(seqs(&p1), vec![5, 6, 7]);
    let c1 = p1["nextCursor"].as_str().unwrap();
    let (_, p2) = s.get(&format!("{path}?limit=3&before={c1}"), &b.token).await;
    assert_eq!(seqs(&p2), vec![2, 3, 4]);
    let (_, p3) = s.get(&format!("{path}?limit=3&before={}", p2["nextCursor"].as_str().unwrap()), &b.token).await;
    assert_eq!(seqs(&p3), vec![1]);
    assert!(p3["nextCursor"].is_null());
    let m = &p1["messages"][0];
    for f in ["messageId", "senderId", "receiverId", "message", "conversationSeq", "timestamp"] {
        assert!(m.get(f).is_some(), "{f} missing: {m}");
    }
    let (_, all) = s.get(&path, &a.token).await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 7);
    let (st, _) = s.get(&format!("{path}?limit=999"), &a.token).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.get(&path, &c.token).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_error(&body, "forbidden");
    let (st, _) = s.get(&format!("{path}?before=xyz"), &a.token).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn chat_list_orders_by_activity_with_unread_counts() {
    let s = TestServer::start().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cid").await);
    send_n(&s, &b, json!({"receiverId": a.id}), 2, "from-bob").await;
    let (_, g) = s.post("/groups/create", Some(&c.token), json!({"groupName": "club", "createdBy": c.id})).await;
    let gid = g["groupId"].as_i64().unwrap();
    s.post(&format!("/groups/{gid}/add"), Some(&c.token), json!({"userId": a.id})).await;
    send_n(&s, &c, json!({"groupId": gid}), 3, "from-cid").await;
    let (st, list) = s.get(&format!("/chat/{}", a.id), &a.token).await;
    assert_eq!(st, StatusCode::OK);
    let chats = list["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!((chats[0]["kind"].clone(), chats[0]["groupId"].clone(), chats[0]["title"].clone(), chats[0]["unreadCount"].clone()), (json!("group"), json!(gid), json!("club"), json!(3)));
    assert_eq!((chats[1]["kind"].clone(), chats[1]["peerId"].clone(), chats[1]["title"].clone(), chats[1]["unreadCount"].clone()), (json!("direct"), json!(b.id), json!("bob"), json!(2)));
    assert_eq!(chats[0]["lastMessage"]["message"], "from-cid 2");
    assert!(chats[0]["chatId"].is_string());
    let (_, p1) = s.get(&format!("/chat/{}?limit=1", a.id), &a.token).await;
    assert_eq!(p1["chats"][0]["kind"], "group");
    let (_, p2) = s.get(&format!("/chat/{}?limit=1&cursor={}", a.id, p1["nextCursor"].as_str().unwrap()), &a.token).await;
    assert_eq!(p2["chats"][0]["kind"], "direct");
    assert!(p2["nextCursor"].is_null());
    let (st, _) = s.get(&format!("/chat/{}", a.id), &b.token).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn group_rest_authorization() {
    let s = TestServer::start().await;
    let (a, b, c, d) = (s.user("ann").await, s.user("bob").await, s.user("cid").await, s.user("dan").await);
    let (st, body) = s.post("/groups/create", Some(&a.token), json!({"groupName": "g", "createdBy": b.id})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_error(&body, "forbidden");
    let (st, body) = s.post("/groups/create", Some(&a.token), json!({"groupName": "", "createdBy": a.id})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_request");
    let (st, g) = s.post("/groups/create", Some(&a.token), json!({"groupName": "g", "createdBy": a.id})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!((g["groupName"].clone(), g["createdBy"].clone(), g["members"].clone()), (json!("g"), json!(a.id), json!([a.id])));
    let gid = g["groupId"].as_i64().unwrap();
    let del = |tok: String, user: i64| {
        let s = &s;
        async move { s.call(Method::DELETE, &format!("/groups/{gid}/remove"), Some(&tok), Some(json!({"userId": user}))).await }
    };
    // Outsiders can neither add nor read.
    let (st, _) = s.post(&format!("/groups/{gid}/add"), Some(&d.token), json!({"userId": d.id})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get(&format!("/groups/{gid}"), &d.token).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Members add; a member cannot remove others; the creator can; a member can leave.
    s.post(&format!("/groups/{gid}/add"), Some(&a.token), json!({"userId": b.id})).await;
    let (st, g) = s.post(&format!("/groups/{gid}/add"), Some(&b.token), json!({"userId": c.id})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(g["members"].as_array().unwrap().len(), 3);
    assert_eq!(del(b.token.clone(), c.id).await.0, StatusCode::FORBIDDEN);
    assert_eq!(del(a.token.clone(), c.id).await.0, StatusCode::OK);
    assert_eq!(del(b.token.clone(), b.id).await.0, StatusCode::OK);
    let (st, _) = s.get(&format!("/groups/{gid}"), &b.token).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.post(&format!("/groups/{gid}/add"), Some(&a.token), json!({"userId": 424242})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = s.get("/groups/999999", &a.token).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
}

#[tokio::test]
async fn group_history_starts_when_a_member_joined() {
    let s = TestServer::start().await;
    let (a, b) = (s.user("ann").await, s.user("bob").await);
    let (_, g) = s.post("/groups/create", Some(&a.token), json!({"groupName": "g", "createdBy": a.id})).await;
    let gid = g["groupId"].as_i64().unwrap();
    send_n(&s, &a, json!({"groupId": gid}), 2, "before").await;
    s.post(&format!("/groups/{gid}/add"), Some(&a.token), json!({"userId": b.id})).await;
    send_n(&s, &a, json!({"groupId": gid}), 3, "after").await;
    let (_, hist_a) = s.get(&format!("/groups/{gid}"), &a.token).await;
    assert_eq!(hist_a["messages"].as_array().unwrap().len(), 5);
    let (_, hist_b) = s.get(&format!("/groups/{gid}?limit=2"), &b.token).await;
    let texts: Vec<_> = hist_b["messages"].as_array().unwrap().iter().map(|m| m["message"].clone()).collect();
    assert_eq!(texts, vec![json!("after 1"), json!("after 2")]);
    let (_, older) = s.get(&format!("/groups/{gid}?limit=2&before={}", hist_b["nextCursor"].as_str().unwrap()), &b.token).await;
    assert_eq!(older["messages"].as_array().unwrap().len(), 1);
    assert!(older["nextCursor"].is_null());
}

#[tokio::test]
async fn media_upload_and_access_control() {
    let s = TestServer::start_with(|c| c.server.media_max_bytes = 1024).await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cid").await);
    let res = s.raw(Method::POST, "/media").bearer_auth(&a.token).header("content-type", "image/png").body(vec![7u8; 100]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let media: Value = res.json().await.unwrap();
    assert_eq!((media["contentType"].clone(), media["size"].clone()), (json!("image/png"), json!(100)));
    let id = media["mediaId"].as_str().unwrap().to_owned();
    let get = |tok: String| {
        let (s, id) = (&s, id.clone());
        async move { s.raw(Method::GET, &format!("/media/{id}")).bearer_auth(tok).send().await.unwrap() }
    };
    let own = get(a.token.clone()).await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(own.headers()["content-type"], "image/png");
    assert_eq!(own.bytes().await.unwrap().len(), 100);
    assert_eq!(get(b.token.clone()).await.status(), StatusCode::FORBIDDEN);
    // Bob cannot attach Ann's media; Ann can, and then Bob may read it, Cid still not.
    let (mut wb, _) = s.ws(&b).await;
    wb.send(json!({"type": "send", "clientMsgId": "m", "receiverId": c.id, "media": {"mediaId": id}})).await;
    assert_eq!(wb.next_of("error").await["code"], "not_found");
    let (mut wa, _) = s.ws(&a).await;
    wa.send(json!({"type": "send", "clientMsgId": "m", "receiverId": b.id, "message": "look", "media": {"mediaId": id}})).await;
    let m = wb.next_of("message").await;
    assert_eq!((m["media"]["mediaId"].clone(), m["media"]["contentType"].clone(), m["media"]["size"].clone()), (json!(id), json!("image/png"), json!(100)));
    assert_eq!(get(b.token.clone()).await.status(), StatusCode::OK);
    assert_eq!(get(c.token.clone()).await.status(), StatusCode::FORBIDDEN);
    let big = s.raw(Method::POST, "/media").bearer_auth(&a.token).body(vec![0u8; 2048]).send().await.unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&big.json().await.unwrap(), "payload_too_large");
    let unauth = s.raw(Method::POST, "/media").body(vec![1u8]).send().await.unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn search_sees_only_the_callers_conversations() {
    let s = TestServer::start().await;
    let (a, b, c) = (s.user("ann").await, s.user("bob").await, s.user("cid").await);
    let (mut wa, _) = s.ws(&a).await;
    wa.send_msg("s1", json!({"receiverId": b.id}), "the purple elephant dances").await;
    wa.send_msg("s2", json!({"receiverId": b.id}), "nothing to see").await;
    let (st, r) = s.get("/search?q=purple%20elephant", &b.token).await;
    assert_eq!(st, StatusCode::OK);
    let hits = r["messages"].as_array().unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["message"], "the purple elephant dances");
    assert_eq!(s.get("/search?q=purple", &a.token).await.1["messages"].as_array().unwrap().len(), 1);
    assert!(s.get("/search?q=purple", &c.token).await.1["messages"].as_array().unwrap().is_empty());
    let (st, _) = s.get("/search?q=%22%20OR%20*%20NEAR(", &b.token).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.get("/search?q=", &b.token).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_request");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let (st, body) = s.get("/nope", &a.token).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    let (st, body) = s.call(Method::PATCH, "/user/register", None, None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "method_not_allowed");
}

#[tokio::test]
async fn admin_endpoints_and_openapi() {
    let s = TestServer::start().await;
    let a = s.user("ann").await;
    let (mut wa, _) = s.ws(&a).await;
    wa.send_msg("x", json!({"receiverId": a.id}), "note to self").await;
    assert_eq!(s.admin_get("/healthz").await.0, StatusCode::OK);
    let (st, ready) = s.admin_get("/readyz").await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    let (st, metrics) = s.admin_get("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    for name in ["switchboard_gateway_connections_active", "switchboard_http_request_duration_seconds"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The process's own figures, which chatbench reads for a gateway on another machine.
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    let rss = value("process_resident_memory_bytes").expect("process_resident_memory_bytes on /metrics");
    assert!(rss > 1_000_000.0, "resident memory {rss} B");
    assert!(value("process_cpu_seconds_total").is_some(), "process_cpu_seconds_total on /metrics");
    assert!(value("process_open_fds").is_some_and(|n| n >= 3.0), "process_open_fds on /metrics");
    // The router's figures: in this process (standalone) or on the router's own admin listener.
    let router_metrics = match s.router_admin_get("/metrics").await {
        Some((st, text)) => {
            assert_eq!(st, StatusCode::OK);
            assert_eq!(s.router_admin_get("/readyz").await.map(|r| r.0), Some(StatusCode::OK));
            text
        }
        None => metrics,
    };
    assert!(router_metrics.contains("switchboard_router_messages_total"), "router metrics missing");
    assert!(router_metrics.contains("process_resident_memory_bytes"), "the router's process figures missing");
    let res = s.raw(Method::GET, "/openapi.json").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/user/register", "/user/login", "/user/refresh", "/user/{id}", "/chat/{userId}", "/messages/{userId}/{receiverId}", "/groups/create", "/media", "/search"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from openapi.json");
    }
}
