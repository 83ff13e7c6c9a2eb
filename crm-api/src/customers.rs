//! One customer, one timeline: customers with identities and custom fields, the timeline of
//! interactions (calls, mails, chats, notes, status changes), tickets, CDRs, and screen pop.
//!
//! # Design
//!
//! An identity (E.164 phone, e-mail address, chat visitor id) belongs to exactly one customer
//! per tenant — a UNIQUE index on `(tenant_id, kind, value)` both enforces that and makes the
//! caller-number look-up of a screen pop one index probe. Phone numbers are normalised to E.164
//! on the way in, so the look-up compares exact strings. Timeline item ids are UUIDv7 built from
//! the time the interaction happened, so "newest first" is "ORDER BY id DESC" and the id is the
//! pagination cursor. Changes touching several rows (merge, ticket status + timeline item, CDR
//! + timeline item) run in one transaction.

use crate::auth::{Perm, Principal};
use crate::error::{ApiError, ApiJson, ApiQuery, Page, PageQuery, StoreError, page_from};
use crate::events::{Envelope, Event, Target};
use crate::ids::{CustomerId, FieldId, TenantId, TicketId, UserId, uuid_v7_at};
use crate::state::{AUDIT_INSERT, AppState};
use crate::store::{Store, with_pool};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use utoipa::ToSchema;

/// Kind of a customer identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// Telephone number, E.164.
    Phone,
    /// E-mail address (stored lowercase).
    Email,
    /// Chat visitor id.
    Chat,
}

impl IdentityKind {
    fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Phone => "phone",
            IdentityKind::Email => "email",
            IdentityKind::Chat => "chat",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "phone" => Some(IdentityKind::Phone),
            "email" => Some(IdentityKind::Email),
            "chat" => Some(IdentityKind::Chat),
            _ => None,
        }
    }
}

/// One way to recognise a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Kind.
    pub kind: IdentityKind,
    /// Value (phones are normalised to E.164).
    pub value: String,
}

/// Normalises a phone number to E.164 (`+` and 7..15 digits; `00` prefix becomes `+`;
/// spaces, dashes, dots, slashes and parentheses are dropped). `None` if it is not one.
pub fn normalize_e164(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let rest = trimmed
        .strip_prefix('+')
        .or_else(|| trimmed.strip_prefix("00"))?;
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' | '(' | ')' => {}
            _ => return None,
        }
    }
    if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    Some(format!("+{digits}"))
}

/// Validates and normalises an identity; `field` names it in errors.
pub fn normalize_identity(field: &str, id: &Identity) -> Result<Identity, ApiError> {
    let value = match id.kind {
        IdentityKind::Phone => normalize_e164(&id.value).ok_or_else(|| {
            ApiError::validation(
                format!("{field}.value"),
                "not an E.164 number (+<country><number>)",
            )
        })?,
        IdentityKind::Email => {
            let v = id.value.trim().to_lowercase();
            let ok = v.len() <= 254
                && v.split_once('@').is_some_and(|(l, d)| {
                    !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
                })
                && !v.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
                && v.matches('@').count() == 1;
            if !ok {
                return Err(ApiError::validation(
                    format!("{field}.value"),
                    "not an e-mail address",
                ));
            }
            v
        }
        IdentityKind::Chat => {
            let v = id.value.trim().to_owned();
            if v.is_empty() || v.len() > 128 {
                return Err(ApiError::validation(
                    format!("{field}.value"),
                    "must be 1..128 characters",
                ));
            }
            v
        }
    };
    Ok(Identity {
        kind: id.kind,
        value,
    })
}

/// A customer card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    /// Id.
    pub id: CustomerId,
    /// Name.
    pub name: String,
    /// Company.
    pub company: Option<String>,
    /// Values of the tenant's custom fields.
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
    /// Phones, e-mails, chat ids.
    pub identities: Vec<Identity>,
    /// Set when this customer was merged into another (follow it).
    pub merged_into: Option<CustomerId>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    id: String,
    name: String,
    company: Option<String>,
    custom: Json<Map<String, Value>>,
    merged_into: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    customer_id: String,
    kind: String,
    value: String,
}

const CUSTOMER_COLS: &str = "id, name, company, custom, merged_into, created_at, updated_at";

fn customer_from(r: CustomerRow, ids: Vec<Identity>) -> Result<Customer, StoreError> {
    Ok(Customer {
        id: CustomerId::parse(&r.id).ok_or(StoreError::Corrupt("customers"))?,
        name: r.name,
        company: r.company,
        custom: r.custom.0,
        identities: ids,
        merged_into: r.merged_into.as_deref().and_then(CustomerId::parse),
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// Attaches identities to customer rows (one query for all of them).
async fn with_identities(
    store: &Store,
    tenant: TenantId,
    rows: Vec<CustomerRow>,
) -> Result<Vec<Customer>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (0..rows.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT customer_id, kind, value FROM customer_identities WHERE tenant_id = $1 \
         AND customer_id IN ({}) ORDER BY id",
        placeholders.join(", ")
    );
    let idents = with_pool!(store, |p| {
        let mut q = sqlx::query_as::<_, IdentityRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(tenant.as_text());
        for r in &rows {
            q = q.bind(&r.id);
        }
        q.fetch_all(p).await?
    });
    rows.into_iter()
        .map(|r| {
            let ids = idents
                .iter()
                .filter(|i| i.customer_id == r.id)
                .filter_map(|i| {
                    Some(Identity {
                        kind: IdentityKind::parse(&i.kind)?,
                        value: i.value.clone(),
                    })
                })
                .collect();
            customer_from(r, ids)
        })
        .collect()
}

/// Loads one customer of the tenant.
pub async fn load_customer(
    store: &Store,
    tenant: TenantId,
    id: CustomerId,
) -> Result<Option<Customer>, StoreError> {
    let row = with_pool!(store, |p| {
        sqlx::query_as::<_, CustomerRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant.as_text())
        .bind(id.as_text())
        .fetch_optional(p)
        .await?
    });
    match row {
        None => Ok(None),
        Some(r) => Ok(with_identities(store, tenant, vec![r]).await?.pop()),
    }
}

/// Finds the customer holding an identity (already normalised).
pub async fn find_by_identity(
    store: &Store,
    tenant: TenantId,
    kind: IdentityKind,
    value: &str,
) -> Result<Option<Customer>, StoreError> {
    let row = with_pool!(store, |p| {
        sqlx::query_as::<_, CustomerRow>(
            "SELECT c.id, c.name, c.company, c.custom, c.merged_into, c.created_at, c.updated_at \
             FROM customer_identities i JOIN customers c ON c.id = i.customer_id \
             WHERE i.tenant_id = $1 AND i.kind = $2 AND i.value = $3",
        )
        .bind(tenant.as_text())
        .bind(kind.as_str())
        .bind(value)
        .fetch_optional(p)
        .await?
    });
    match row {
        None => Ok(None),
        Some(r) => Ok(with_identities(store, tenant, vec![r]).await?.pop()),
    }
}

// ---------------------------------------------------------------------------------------------
// Custom field definitions ("data masks")

/// Type of a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Free text (max 2000 chars).
    Text,
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// true/false.
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// One of `options`.
    Select,
}

/// A tenant-defined customer field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Key in `custom` (`a-z 0-9 _`, 1..64).
    pub key: String,
    /// Label in the UI.
    pub label: String,
    /// Type.
    pub kind: FieldKind,
    /// Whether every customer must have it.
    #[serde(default)]
    pub required: bool,
    /// Allowed values of a `select`.
    #[serde(default)]
    pub options: Vec<String>,
}

impl FieldDef {
    fn check(&self, v: &Value) -> Result<(), String> {
        let ok = match self.kind {
            FieldKind::Text => v.as_str().is_some_and(|s| s.chars().count() <= 2000),
            FieldKind::Number => v.is_number(),
            FieldKind::Integer => v.is_i64() || v.is_u64(),
            FieldKind::Boolean => v.is_boolean(),
            FieldKind::Date => v
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            FieldKind::Select => v
                .as_str()
                .is_some_and(|s| self.options.iter().any(|o| o == s)),
        };
        if ok || v.is_null() {
            Ok(())
        } else {
            Err(match self.kind {
                FieldKind::Select => format!("must be one of {:?}", self.options),
                k => format!(
                    "must be a {}",
                    serde_json::to_string(&k)
                        .unwrap_or_default()
                        .trim_matches('"')
                ),
            })
        }
    }
}

#[derive(sqlx::FromRow)]
struct FieldRow {
    key: String,
    label: String,
    kind: String,
    required: bool,
    options: Json<Vec<String>>,
}

async fn field_defs(store: &Store, tenant: TenantId) -> Result<Vec<FieldDef>, StoreError> {
    let rows = with_pool!(store, |p| {
        sqlx::query_as::<_, FieldRow>(
            "SELECT key, label, kind, required, options FROM custom_field_defs \
             WHERE tenant_id = $1 ORDER BY key",
        )
        .bind(tenant.as_text())
        .fetch_all(p)
        .await?
    });
    rows.into_iter()
        .map(|r| {
            Ok(FieldDef {
                key: r.key,
                label: r.label,
                kind: serde_json::from_value(Value::String(r.kind))
                    .map_err(|_| StoreError::Corrupt("custom_field_defs"))?,
                required: r.required,
                options: r.options.0,
            })
        })
        .collect()
}

/// Checks custom values against the definitions (unknown keys, types, required).
fn validate_custom(
    defs: &[FieldDef],
    custom: &Map<String, Value>,
    require_all: bool,
) -> Result<(), ApiError> {
    for (k, v) in custom {
        let def = defs
            .iter()
            .find(|d| &d.key == k)
            .ok_or_else(|| ApiError::validation(format!("custom.{k}"), "no such custom field"))?;
        def.check(v)
            .map_err(|m| ApiError::validation(format!("custom.{k}"), m))?;
    }
    if require_all {
        for d in defs.iter().filter(|d| d.required) {
            if custom.get(&d.key).is_none_or(Value::is_null) {
                return Err(ApiError::validation(
                    format!("custom.{}", d.key),
                    "required",
                ));
            }
        }
    }
    Ok(())
}

/// Custom field definitions of the tenant.
#[utoipa::path(get, path = "/api/v1/custom-fields", tag = "customers",
    responses((status = 200, body = Vec<FieldDef>)))]
pub async fn list_fields(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<Vec<FieldDef>>, ApiError> {
    who.require(Perm::CustomersRead)?;
    Ok(axum::Json(field_defs(state.store(), who.tenant).await?))
}

/// Defines a custom field.
#[utoipa::path(post, path = "/api/v1/custom-fields", tag = "customers", request_body = FieldDef,
    responses((status = 201, body = FieldDef), (status = 422, body = crate::error::ErrorBody)))]
pub async fn post_field(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(f): ApiJson<FieldDef>,
) -> Result<(StatusCode, axum::Json<FieldDef>), ApiError> {
    who.require(Perm::UsersAdmin)?;
    if f.key.is_empty()
        || f.key.len() > 64
        || !f
            .key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::validation("key", "1..64 of a-z 0-9 _"));
    }
    if f.label.is_empty() || f.label.len() > 200 {
        return Err(ApiError::validation("label", "must be 1..200 characters"));
    }
    if f.kind == FieldKind::Select && f.options.is_empty() {
        return Err(ApiError::validation("options", "a select needs options"));
    }
    if f.kind != FieldKind::Select && !f.options.is_empty() {
        return Err(ApiError::validation("options", "only a select has options"));
    }
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let res = with_pool!(state.store(), |p| {
        sqlx::query(
            "INSERT INTO custom_field_defs (id, tenant_id, key, label, kind, required, options) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(FieldId::new().as_text())
        .bind(who.tenant.as_text())
        .bind(&f.key)
        .bind(&f.label)
        .bind(kind)
        .bind(f.required)
        .bind(Json(&f.options))
        .execute(p)
        .await
        .map(|_| ())
    });
    match res {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict("key", "field exists"));
        }
        Err(e) => return Err(e.into()),
    }
    state
        .audit(
            &who,
            "custom_field",
            &f.key,
            "create",
            None,
            Some(serde_json::json!(f)),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(f)))
}

// ---------------------------------------------------------------------------------------------
// Customers

/// New customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Name (1..200).
    pub name: String,
    /// Company.
    #[serde(default)]
    pub company: Option<String>,
    /// Identities.
    #[serde(default)]
    pub identities: Vec<Identity>,
    /// Custom field values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
}

/// Changes to a customer; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New company.
    #[serde(default)]
    pub company: Option<String>,
    /// Custom values to set (null removes).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Map<String, Value>>,
    /// Replaces all identities.
    #[serde(default)]
    pub identities: Option<Vec<Identity>>,
}

fn check_name(field: &str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() || v.chars().count() > 200 {
        return Err(ApiError::validation(field, "must be 1..200 characters"));
    }
    Ok(())
}

fn normalize_all(ids: &[Identity]) -> Result<Vec<Identity>, ApiError> {
    let mut out: Vec<Identity> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let n = normalize_identity(&format!("identities[{i}]"), id)?;
        if out.contains(&n) {
            return Err(ApiError::validation(
                format!("identities[{i}]"),
                "duplicate identity",
            ));
        }
        out.push(n);
    }
    Ok(out)
}

fn identity_conflict(e: sqlx::Error) -> ApiError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            ApiError::conflict("identities", "an identity belongs to another customer")
        }
        e => e.into(),
    }
}

/// Lists customers (not merged-away ones), oldest first; `q` filters by name.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CustomerQuery {
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size 1..=200.
    pub limit: Option<i64>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
}

/// Customers of the tenant.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", params(CustomerQuery),
    responses((status = 200, body = Page<Customer>)))]
pub async fn list_customers(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> Result<axum::Json<Page<Customer>>, ApiError> {
    who.require(Perm::CustomersRead)?;
    let (cursor, limit) = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    }
    .validate()?;
    let mut sql = format!(
        "SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 AND merged_into IS NULL"
    );
    let mut n = 1;
    if cursor.is_some() {
        n += 1;
        sql.push_str(&format!(" AND id > ${n}"));
    }
    let pattern = q.q.as_ref().map(|s| format!("%{}%", s.to_lowercase()));
    if pattern.is_some() {
        n += 1;
        sql.push_str(&format!(" AND LOWER(name) LIKE ${n}"));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let rows = with_pool!(state.store(), |p| {
        let mut qq = sqlx::query_as::<_, CustomerRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.tenant.as_text());
        if let Some(c) = &cursor {
            qq = qq.bind(c);
        }
        if let Some(pat) = &pattern {
            qq = qq.bind(pat);
        }
        qq.fetch_all(p).await?
    });
    let customers = with_identities(state.store(), who.tenant, rows).await?;
    Ok(axum::Json(page_from(customers, limit, |c| c.id.as_text())))
}

/// Creates a customer (with identities, in one transaction).
pub async fn create_customer(
    store: &Store,
    tenant: TenantId,
    actor: &str,
    c: &NewCustomer,
    now: DateTime<Utc>,
) -> Result<Customer, ApiError> {
    check_name("name", &c.name)?;
    if let Some(co) = &c.company {
        check_name("company", co)?;
    }
    let identities = normalize_all(&c.identities)?;
    let defs = field_defs(store, tenant).await?;
    validate_custom(&defs, &c.custom, true)?;
    let custom: Map<String, Value> = c
        .custom
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let id = CustomerId::new();
    let customer = Customer {
        id,
        name: c.name.trim().to_owned(),
        company: c.company.clone(),
        custom,
        identities,
        merged_into: None,
        created_at: now,
        updated_at: now,
    };
    let after = serde_json::to_value(&customer).ok();
    with_pool!(store, |p| {
        let mut tx = p.begin().await?;
        sqlx::query(
            "INSERT INTO customers (id, tenant_id, name, company, custom, merged_into, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $6)",
        )
        .bind(id.as_text())
        .bind(tenant.as_text())
        .bind(&customer.name)
        .bind(&customer.company)
        .bind(Json(&customer.custom))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for ident in &customer.identities {
            sqlx::query(
                "INSERT INTO customer_identities (id, tenant_id, customer_id, kind, value) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(uuid::Uuid::now_v7().as_hyphenated().to_string())
            .bind(tenant.as_text())
            .bind(id.as_text())
            .bind(ident.kind.as_str())
            .bind(&ident.value)
            .execute(&mut *tx)
            .await
            .map_err(identity_conflict)?;
        }
        sqlx::query(AUDIT_INSERT)
            .bind(uuid_v7_at(now).as_hyphenated().to_string())
            .bind(tenant.as_text())
            .bind(actor)
            .bind(now)
            .bind("customer")
            .bind(id.as_text())
            .bind("create")
            .bind(None::<Json<Value>>)
            .bind(after.map(Json))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(customer)
}

/// Creates a customer.
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers", request_body = NewCustomer,
    responses((status = 201, body = Customer), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn post_customer(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(c): ApiJson<NewCustomer>,
) -> Result<(StatusCode, axum::Json<Customer>), ApiError> {
    who.require(Perm::CustomersWrite)?;
    let customer = create_customer(state.store(), who.tenant, &who.actor, &c, state.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(customer)))
}

fn parse_customer_id(s: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(s).ok_or(ApiError::NotFound)
}

/// One customer.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "customer id")),
    responses((status = 200, body = Customer), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_customer(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    who.require(Perm::CustomersRead)?;
    let id = parse_customer_id(&id)?;
    load_customer(state.store(), who.tenant, id)
        .await?
        .map(axum::Json)
        .ok_or(ApiError::NotFound)
}

/// Changes a customer.
#[utoipa::path(patch, path = "/api/v1/customers/{id}", tag = "customers", request_body = CustomerPatch,
    params(("id" = String, Path, description = "customer id")),
    responses((status = 200, body = Customer), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn patch_customer(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<CustomerPatch>,
) -> Result<axum::Json<Customer>, ApiError> {
    who.require(Perm::CustomersWrite)?;
    let id = parse_customer_id(&id)?;
    let store = state.store();
    let before = load_customer(store, who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut after = before.clone();
    if let Some(n) = &patch.name {
        check_name("name", n)?;
        after.name = n.trim().to_owned();
    }
    if let Some(c) = &patch.company {
        check_name("company", c)?;
        after.company = Some(c.clone());
    }
    if let Some(custom) = &patch.custom {
        let defs = field_defs(store, who.tenant).await?;
        validate_custom(&defs, custom, false)?;
        for (k, v) in custom {
            if v.is_null() {
                after.custom.remove(k);
            } else {
                after.custom.insert(k.clone(), v.clone());
            }
        }
        validate_custom(&defs, &after.custom, true)?;
    }
    if let Some(ids) = &patch.identities {
        after.identities = normalize_all(ids)?;
    }
    let now = state.now();
    after.updated_at = now;
    with_pool!(store, |p| {
        let mut tx = p.begin().await?;
        sqlx::query(
            "UPDATE customers SET name = $1, company = $2, custom = $3, updated_at = $4 \
             WHERE id = $5 AND tenant_id = $6",
        )
        .bind(&after.name)
        .bind(&after.company)
        .bind(Json(&after.custom))
        .bind(now)
        .bind(id.as_text())
        .bind(who.tenant.as_text())
        .execute(&mut *tx)
        .await?;
        if patch.identities.is_some() {
            sqlx::query(
                "DELETE FROM customer_identities WHERE customer_id = $1 AND tenant_id = $2",
            )
            .bind(id.as_text())
            .bind(who.tenant.as_text())
            .execute(&mut *tx)
            .await?;
            for ident in &after.identities {
                sqlx::query(
                    "INSERT INTO customer_identities (id, tenant_id, customer_id, kind, value) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(uuid::Uuid::now_v7().as_hyphenated().to_string())
                .bind(who.tenant.as_text())
                .bind(id.as_text())
                .bind(ident.kind.as_str())
                .bind(&ident.value)
                .execute(&mut *tx)
                .await
                .map_err(identity_conflict)?;
            }
        }
        sqlx::query(AUDIT_INSERT)
            .bind(uuid_v7_at(now).as_hyphenated().to_string())
            .bind(who.tenant.as_text())
            .bind(&who.actor)
            .bind(now)
            .bind("customer")
            .bind(id.as_text())
            .bind("update")
            .bind(serde_json::to_value(&before).ok().map(Json))
            .bind(serde_json::to_value(&after).ok().map(Json))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(axum::Json(after))
}

/// Merge request: the duplicate is folded into the customer in the path.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The customer to fold in (it keeps existing, with `merged_into` set).
    pub duplicate_id: CustomerId,
}

/// Merges a duplicate into this customer: identities, timeline and tickets move over; custom
/// values the survivor lacks are taken over; all in one transaction.
#[utoipa::path(post, path = "/api/v1/customers/{id}/merge", tag = "customers", request_body = MergeRequest,
    params(("id" = String, Path, description = "surviving customer id")),
    responses((status = 200, body = Customer), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn merge_customer(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MergeRequest>,
) -> Result<axum::Json<Customer>, ApiError> {
    who.require(Perm::CustomersWrite)?;
    let id = parse_customer_id(&id)?;
    if id == req.duplicate_id {
        return Err(ApiError::validation(
            "duplicate_id",
            "cannot merge a customer into itself",
        ));
    }
    let store = state.store();
    let survivor = load_customer(store, who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let dup = load_customer(store, who.tenant, req.duplicate_id)
        .await?
        .ok_or_else(|| ApiError::validation("duplicate_id", "no such customer"))?;
    if survivor.merged_into.is_some() {
        return Err(ApiError::validation(
            "id",
            "customer was itself merged away",
        ));
    }
    if dup.merged_into.is_some() {
        return Err(ApiError::validation("duplicate_id", "already merged"));
    }
    let mut custom = survivor.custom.clone();
    for (k, v) in &dup.custom {
        custom.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let now = state.now();
    let (t, s, d) = (who.tenant.as_text(), id.as_text(), dup.id.as_text());
    with_pool!(store, |p| {
        let mut tx = p.begin().await?;
        for table in ["customer_identities", "interactions", "tickets"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET customer_id = $1 WHERE customer_id = $2 AND tenant_id = $3"
            )))
            .bind(&s)
            .bind(&d)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE customers SET custom = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4",
        )
        .bind(Json(&custom))
        .bind(now)
        .bind(&s)
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE customers SET merged_into = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4")
            .bind(&s)
            .bind(now)
            .bind(&d)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AUDIT_INSERT)
            .bind(uuid_v7_at(now).as_hyphenated().to_string())
            .bind(&t)
            .bind(&who.actor)
            .bind(now)
            .bind("customer")
            .bind(&s)
            .bind("merge")
            .bind(serde_json::to_value(&dup).ok().map(Json))
            .bind(Some(Json(serde_json::json!({ "merged": d }))))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    load_customer(store, who.tenant, id)
        .await?
        .map(axum::Json)
        .ok_or(ApiError::NotFound)
}

/// Look-up by identity: exactly one of `phone`, `email`, `chat`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    /// Phone number (normalised to E.164 before the look-up).
    pub phone: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Chat visitor id.
    pub chat: Option<String>,
}

/// Finds the customer by caller number, e-mail or chat id.
#[utoipa::path(get, path = "/api/v1/customers/lookup", tag = "customers", params(LookupQuery),
    responses((status = 200, body = Customer), (status = 404, body = crate::error::ErrorBody)))]
pub async fn lookup_customer(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> Result<axum::Json<Customer>, ApiError> {
    who.require(Perm::CustomersRead)?;
    let (kind, field, value) = match (&q.phone, &q.email, &q.chat) {
        (Some(v), None, None) => (IdentityKind::Phone, "phone", v),
        (None, Some(v), None) => (IdentityKind::Email, "email", v),
        (None, None, Some(v)) => (IdentityKind::Chat, "chat", v),
        _ => {
            return Err(ApiError::validation(
                "query",
                "give exactly one of phone, email, chat",
            ));
        }
    };
    let ident = normalize_identity(
        field,
        &Identity {
            kind,
            value: value.clone(),
        },
    )
    .map_err(|_| ApiError::validation(field, "invalid value"))?;
    find_by_identity(state.store(), who.tenant, kind, &ident.value)
        .await?
        .map(axum::Json)
        .ok_or(ApiError::NotFound)
}

// ---------------------------------------------------------------------------------------------
// Timeline

/// Kind of timeline item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    /// A call.
    Call,
    /// An e-mail.
    Mail,
    /// A chat.
    Chat,
    /// An internal note.
    #[default]
    Note,
    /// A ticket status change.
    StatusChange,
}

impl InteractionKind {
    fn as_str(self) -> &'static str {
        match self {
            InteractionKind::Call => "call",
            InteractionKind::Mail => "mail",
            InteractionKind::Chat => "chat",
            InteractionKind::Note => "note",
            InteractionKind::StatusChange => "status_change",
        }
    }
}

/// An item on a customer's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct TimelineItem {
    /// Id (time-ordered by `occurred_at`).
    pub id: String,
    /// Customer.
    pub customer_id: String,
    /// call, mail, chat, note, status_change.
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Ticket it belongs to.
    pub ticket_id: Option<String>,
    /// acd-core contact id.
    pub contact_id: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// inbound / outbound.
    pub direction: Option<String>,
    /// Waiting time, s.
    pub wait_s: Option<i64>,
    /// Talk time, s.
    pub talk_s: Option<i64>,
    /// Wrap-up time, s.
    pub wrap_s: Option<i64>,
    /// Wrap-up code.
    pub wrapup_code: Option<String>,
    /// Recording reference.
    pub recording: Option<String>,
    /// Quality (MOS).
    pub quality: Option<f64>,
    /// Subject (mail).
    pub subject: Option<String>,
    /// Text (note, mail, chat transcript).
    pub body: Option<String>,
    /// Who recorded it.
    pub created_by: String,
}

const TIMELINE_COLS: &str = "id, customer_id, kind, occurred_at, ticket_id, contact_id, queue, agent, \
    direction, wait_s, talk_s, wrap_s, wrapup_code, recording, quality, subject, body, created_by";

/// New timeline item.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTimelineItem {
    /// Kind (status_change items come from tickets, not from here).
    pub kind: InteractionKind,
    /// When it happened (default: now).
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Ticket.
    #[serde(default)]
    pub ticket_id: Option<TicketId>,
    /// Contact id.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// Agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// inbound / outbound.
    #[serde(default)]
    pub direction: Option<String>,
    /// Waiting time, s.
    #[serde(default)]
    pub wait_s: Option<i64>,
    /// Talk time, s.
    #[serde(default)]
    pub talk_s: Option<i64>,
    /// Wrap-up time, s.
    #[serde(default)]
    pub wrap_s: Option<i64>,
    /// Wrap-up code.
    #[serde(default)]
    pub wrapup_code: Option<String>,
    /// Recording reference.
    #[serde(default)]
    pub recording: Option<String>,
    /// Quality (MOS 1..5).
    #[serde(default)]
    pub quality: Option<f64>,
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Text.
    #[serde(default)]
    pub body: Option<String>,
}

impl NewTimelineItem {
    fn validate(&self) -> Result<(), ApiError> {
        if self.kind == InteractionKind::StatusChange {
            return Err(ApiError::validation(
                "kind",
                "status changes are recorded by tickets",
            ));
        }
        for (f, v) in [
            ("wait_s", self.wait_s),
            ("talk_s", self.talk_s),
            ("wrap_s", self.wrap_s),
        ] {
            if v.is_some_and(|v| !(0..=86_400 * 7).contains(&v)) {
                return Err(ApiError::validation(f, "must be 0..604800 seconds"));
            }
        }
        if self.quality.is_some_and(|q| !(1.0..=5.0).contains(&q)) {
            return Err(ApiError::validation("quality", "MOS must be 1..5"));
        }
        if let Some(d) = &self.direction
            && d != "inbound"
            && d != "outbound"
        {
            return Err(ApiError::validation("direction", "inbound or outbound"));
        }
        for (f, v, max) in [
            ("subject", &self.subject, 500),
            ("body", &self.body, 100_000),
            ("queue", &self.queue, 64),
            ("agent", &self.agent, 64),
            ("wrapup_code", &self.wrapup_code, 64),
            ("recording", &self.recording, 1000),
            ("contact_id", &self.contact_id, 128),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > max) {
                return Err(ApiError::validation(f, format!("at most {max} bytes")));
            }
        }
        if self.kind == InteractionKind::Note && self.body.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::validation("body", "a note needs a body"));
        }
        Ok(())
    }
}

/// Inserts a timeline item on an open transaction/connection.
macro_rules! insert_item {
    ($ex:expr, $tenant:expr, $customer:expr, $actor:expr, $at:expr, $it:expr) => {
        sqlx::query(
            "INSERT INTO interactions (id, tenant_id, customer_id, kind, occurred_at, ticket_id, \
             contact_id, queue, agent, direction, wait_s, talk_s, wrap_s, wrapup_code, recording, \
             quality, subject, body, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(uuid_v7_at($at).as_hyphenated().to_string())
        .bind($tenant)
        .bind($customer)
        .bind($it.kind.as_str())
        .bind($at)
        .bind($it.ticket_id.map(|t: TicketId| t.as_text()))
        .bind(&$it.contact_id)
        .bind(&$it.queue)
        .bind(&$it.agent)
        .bind(&$it.direction)
        .bind($it.wait_s)
        .bind($it.talk_s)
        .bind($it.wrap_s)
        .bind(&$it.wrapup_code)
        .bind(&$it.recording)
        .bind($it.quality)
        .bind(&$it.subject)
        .bind(&$it.body)
        .bind($actor)
        .execute($ex)
    };
}

/// Newest-first timeline of a customer (`cursor` = last id of the previous page).
pub async fn timeline(
    store: &Store,
    who: &Principal,
    customer: CustomerId,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<TimelineItem>, StoreError> {
    let mut sql = format!(
        "SELECT {TIMELINE_COLS} FROM interactions WHERE tenant_id = $1 AND customer_id = $2"
    );
    let mut n = 2;
    if cursor.is_some() {
        n += 1;
        sql.push_str(&format!(" AND id < ${n}"));
    }
    let queues: Vec<String> = who
        .release
        .as_ref()
        .map(|r| r.queues.clone())
        .unwrap_or_default();
    if who.release.is_some() {
        // Service providers see only items of released queues (and queue-less notes/mails).
        let ph: Vec<String> = (0..queues.len())
            .map(|i| format!("${}", n + 1 + i))
            .collect();
        n += queues.len();
        if ph.is_empty() {
            sql.push_str(" AND queue IS NULL");
        } else {
            sql.push_str(&format!(
                " AND (queue IS NULL OR queue IN ({}))",
                ph.join(", ")
            ));
        }
    }
    let _ = n;
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
    Ok(with_pool!(store, |p| {
        let mut q = sqlx::query_as::<_, TimelineItem>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.tenant.as_text())
            .bind(customer.as_text());
        if let Some(c) = cursor {
            q = q.bind(c);
        }
        for qu in &queues {
            q = q.bind(qu);
        }
        q.fetch_all(p).await?
    }))
}

/// A customer's timeline, newest first.
#[utoipa::path(get, path = "/api/v1/customers/{id}/timeline", tag = "customers", params(
    ("id" = String, Path, description = "customer id"), PageQuery),
    responses((status = 200, body = Page<TimelineItem>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_timeline(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiQuery(pq): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<TimelineItem>>, ApiError> {
    who.require(Perm::CustomersRead)?;
    let id = parse_customer_id(&id)?;
    let (cursor, limit) = pq.validate()?;
    load_customer(state.store(), who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let rows = timeline(state.store(), &who, id, cursor.as_deref(), limit + 1).await?;
    Ok(axum::Json(page_from(rows, limit, |r| r.id.clone())))
}

/// Adds an item to a customer's timeline.
#[utoipa::path(post, path = "/api/v1/customers/{id}/timeline", tag = "customers", request_body = NewTimelineItem,
    params(("id" = String, Path, description = "customer id")),
    responses((status = 201, body = TimelineItem), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn post_timeline(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(item): ApiJson<NewTimelineItem>,
) -> Result<(StatusCode, axum::Json<TimelineItem>), ApiError> {
    who.require(Perm::CustomersWrite)?;
    item.validate()?;
    let id = parse_customer_id(&id)?;
    if let Some(q) = &item.queue
        && !who.sees_queue(q)
    {
        return Err(ApiError::Forbidden);
    }
    let store = state.store();
    let customer = load_customer(store, who.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if customer.merged_into.is_some() {
        return Err(ApiError::validation(
            "id",
            "customer was merged; use the surviving customer",
        ));
    }
    if let Some(t) = item.ticket_id {
        ticket_of_customer(store, who.tenant, t, id).await?;
    }
    let at = item.occurred_at.unwrap_or_else(|| state.now());
    let item_id = uuid_v7_at(at);
    with_pool!(store, |p| {
        sqlx::query(
            "INSERT INTO interactions (id, tenant_id, customer_id, kind, occurred_at, ticket_id, \
             contact_id, queue, agent, direction, wait_s, talk_s, wrap_s, wrapup_code, recording, \
             quality, subject, body, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(item_id.as_hyphenated().to_string())
        .bind(who.tenant.as_text())
        .bind(id.as_text())
        .bind(item.kind.as_str())
        .bind(at)
        .bind(item.ticket_id.map(|t| t.as_text()))
        .bind(&item.contact_id)
        .bind(&item.queue)
        .bind(&item.agent)
        .bind(&item.direction)
        .bind(item.wait_s)
        .bind(item.talk_s)
        .bind(item.wrap_s)
        .bind(&item.wrapup_code)
        .bind(&item.recording)
        .bind(item.quality)
        .bind(&item.subject)
        .bind(&item.body)
        .bind(&who.actor)
        .execute(p)
        .await?;
    });
    let row = with_pool!(store, |p| {
        sqlx::query_as::<_, TimelineItem>(sqlx::AssertSqlSafe(format!(
            "SELECT {TIMELINE_COLS} FROM interactions WHERE id = $1 AND tenant_id = $2"
        )))
        .bind(item_id.as_hyphenated().to_string())
        .bind(who.tenant.as_text())
        .fetch_one(p)
        .await?
    });
    Ok((StatusCode::CREATED, axum::Json(row)))
}

// ---------------------------------------------------------------------------------------------
// Tickets

/// Ticket status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Needs work.
    Open,
    /// Waiting for the customer or a third party.
    Pending,
    /// Done.
    Solved,
}

/// Ticket priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

fn enum_str<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A ticket (conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ticket {
    /// Id.
    pub id: TicketId,
    /// Customer.
    pub customer_id: CustomerId,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: TicketStatus,
    /// Priority.
    pub priority: Priority,
    /// Assigned user.
    pub assignee: Option<UserId>,
    /// Team (queue name).
    pub team: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Due time.
    pub due_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: String,
    customer_id: String,
    subject: String,
    status: String,
    priority: String,
    assignee: Option<String>,
    team: Option<String>,
    tags: Json<Vec<String>>,
    due_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const TICKET_COLS: &str = "id, customer_id, subject, status, priority, assignee, team, tags, due_at, created_at, updated_at";

impl TicketRow {
    fn into_ticket(self) -> Result<Ticket, StoreError> {
        let bad = || StoreError::Corrupt("tickets");
        Ok(Ticket {
            id: TicketId::parse(&self.id).ok_or_else(bad)?,
            customer_id: CustomerId::parse(&self.customer_id).ok_or_else(bad)?,
            subject: self.subject,
            status: serde_json::from_value(Value::String(self.status)).map_err(|_| bad())?,
            priority: serde_json::from_value(Value::String(self.priority)).map_err(|_| bad())?,
            assignee: self.assignee.as_deref().and_then(UserId::parse),
            team: self.team,
            tags: self.tags.0,
            due_at: self.due_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

async fn load_ticket(
    store: &Store,
    tenant: TenantId,
    id: TicketId,
) -> Result<Option<Ticket>, StoreError> {
    let row = with_pool!(store, |p| {
        sqlx::query_as::<_, TicketRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {TICKET_COLS} FROM tickets WHERE id = $1 AND tenant_id = $2"
        )))
        .bind(id.as_text())
        .bind(tenant.as_text())
        .fetch_optional(p)
        .await?
    });
    row.map(TicketRow::into_ticket).transpose()
}

async fn ticket_of_customer(
    store: &Store,
    tenant: TenantId,
    t: TicketId,
    customer: CustomerId,
) -> Result<(), ApiError> {
    match load_ticket(store, tenant, t).await? {
        Some(tk) if tk.customer_id == customer => Ok(()),
        _ => Err(ApiError::validation(
            "ticket_id",
            "no such ticket of this customer",
        )),
    }
}

async fn check_assignee(store: &Store, tenant: TenantId, u: UserId) -> Result<(), ApiError> {
    let found: Option<(String,)> = with_pool!(store, |p| {
        sqlx::query_as("SELECT id FROM users WHERE id = $1 AND tenant_id = $2")
            .bind(u.as_text())
            .bind(tenant.as_text())
            .fetch_optional(p)
            .await?
    });
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::validation("assignee", "no such user"))
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(ApiError::validation("tags", "at most 50 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() || t.len() > 64 {
            return Err(ApiError::validation(
                format!("tags[{i}]"),
                "must be 1..64 bytes",
            ));
        }
    }
    Ok(())
}

/// New ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// Customer.
    pub customer_id: CustomerId,
    /// Subject.
    pub subject: String,
    /// Priority (default normal).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Assignee.
    #[serde(default)]
    pub assignee: Option<UserId>,
    /// Team.
    #[serde(default)]
    pub team: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Due.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
}

/// Changes to a ticket; a status change also lands on the customer's timeline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: Option<TicketStatus>,
    /// Priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Assignee.
    #[serde(default)]
    pub assignee: Option<UserId>,
    /// Team.
    #[serde(default)]
    pub team: Option<String>,
    /// Tags (replace).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Due.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
}

/// Ticket list filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TicketQuery {
    /// Cursor.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Only this status.
    pub status: Option<TicketStatus>,
    /// Only this customer's.
    pub customer_id: Option<CustomerId>,
}

/// Tickets of the tenant.
#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", params(TicketQuery),
    responses((status = 200, body = Page<Ticket>)))]
pub async fn list_tickets(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<TicketQuery>,
) -> Result<axum::Json<Page<Ticket>>, ApiError> {
    who.require(Perm::TicketsRead)?;
    let (cursor, limit) = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    }
    .validate()?;
    let mut sql = format!("SELECT {TICKET_COLS} FROM tickets WHERE tenant_id = $1");
    let mut binds: Vec<String> = Vec::new();
    if let Some(c) = cursor {
        binds.push(c);
        sql.push_str(&format!(" AND id > ${}", binds.len() + 1));
    }
    if let Some(s) = q.status {
        binds.push(enum_str(s));
        sql.push_str(&format!(" AND status = ${}", binds.len() + 1));
    }
    if let Some(c) = q.customer_id {
        binds.push(c.as_text());
        sql.push_str(&format!(" AND customer_id = ${}", binds.len() + 1));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let rows = with_pool!(state.store(), |p| {
        let mut qq = sqlx::query_as::<_, TicketRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.tenant.as_text());
        for b in &binds {
            qq = qq.bind(b);
        }
        qq.fetch_all(p).await?
    });
    let tickets = rows
        .into_iter()
        .map(TicketRow::into_ticket)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(page_from(tickets, limit, |t| t.id.as_text())))
}

/// Opens a ticket.
#[utoipa::path(post, path = "/api/v1/tickets", tag = "tickets", request_body = NewTicket,
    responses((status = 201, body = Ticket), (status = 422, body = crate::error::ErrorBody)))]
pub async fn post_ticket(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(t): ApiJson<NewTicket>,
) -> Result<(StatusCode, axum::Json<Ticket>), ApiError> {
    who.require(Perm::TicketsWrite)?;
    check_name("subject", &t.subject)?;
    check_tags(&t.tags)?;
    if let Some(team) = &t.team {
        crate::auth::validate_name("team", team)?;
    }
    let store = state.store();
    if load_customer(store, who.tenant, t.customer_id)
        .await?
        .is_none()
    {
        return Err(ApiError::validation("customer_id", "no such customer"));
    }
    if let Some(a) = t.assignee {
        check_assignee(store, who.tenant, a).await?;
    }
    let now = state.now();
    let ticket = Ticket {
        id: TicketId::new(),
        customer_id: t.customer_id,
        subject: t.subject.trim().to_owned(),
        status: TicketStatus::Open,
        priority: t.priority.unwrap_or(Priority::Normal),
        assignee: t.assignee,
        team: t.team,
        tags: t.tags,
        due_at: t.due_at,
        created_at: now,
        updated_at: now,
    };
    with_pool!(store, |p| {
        sqlx::query(
            "INSERT INTO tickets (id, tenant_id, customer_id, subject, status, priority, assignee, \
             team, tags, due_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(ticket.id.as_text())
        .bind(who.tenant.as_text())
        .bind(ticket.customer_id.as_text())
        .bind(&ticket.subject)
        .bind(enum_str(ticket.status))
        .bind(enum_str(ticket.priority))
        .bind(ticket.assignee.map(|a| a.as_text()))
        .bind(&ticket.team)
        .bind(Json(&ticket.tags))
        .bind(ticket.due_at)
        .bind(now)
        .execute(p)
        .await?;
    });
    Ok((StatusCode::CREATED, axum::Json(ticket)))
}

fn parse_ticket_id(s: &str) -> Result<TicketId, ApiError> {
    TicketId::parse(s).ok_or(ApiError::NotFound)
}

/// One ticket.
#[utoipa::path(get, path = "/api/v1/tickets/{id}", tag = "tickets",
    params(("id" = String, Path, description = "ticket id")),
    responses((status = 200, body = Ticket), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_ticket(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Ticket>, ApiError> {
    who.require(Perm::TicketsRead)?;
    load_ticket(state.store(), who.tenant, parse_ticket_id(&id)?)
        .await?
        .map(axum::Json)
        .ok_or(ApiError::NotFound)
}

/// Changes a ticket; a status change is recorded on the timeline in the same transaction.
#[utoipa::path(patch, path = "/api/v1/tickets/{id}", tag = "tickets", request_body = TicketPatch,
    params(("id" = String, Path, description = "ticket id")),
    responses((status = 200, body = Ticket), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn patch_ticket(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<TicketPatch>,
) -> Result<axum::Json<Ticket>, ApiError> {
    who.require(Perm::TicketsWrite)?;
    let store = state.store();
    let before = load_ticket(store, who.tenant, parse_ticket_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut t = before.clone();
    if let Some(s) = &p.subject {
        check_name("subject", s)?;
        t.subject = s.trim().to_owned();
    }
    if let Some(s) = p.status {
        t.status = s;
    }
    if let Some(pr) = p.priority {
        t.priority = pr;
    }
    if let Some(a) = p.assignee {
        check_assignee(store, who.tenant, a).await?;
        t.assignee = Some(a);
    }
    if let Some(team) = &p.team {
        crate::auth::validate_name("team", team)?;
        t.team = Some(team.clone());
    }
    if let Some(tags) = &p.tags {
        check_tags(tags)?;
        t.tags = tags.clone();
    }
    if p.due_at.is_some() {
        t.due_at = p.due_at;
    }
    let now = state.now();
    t.updated_at = now;
    let status_item = (t.status != before.status).then(|| NewTimelineItem {
        kind: InteractionKind::StatusChange,
        ticket_id: Some(t.id),
        subject: Some(format!(
            "{} → {}",
            enum_str(before.status),
            enum_str(t.status)
        )),
        ..Default::default()
    });
    let tenant = who.tenant.as_text();
    with_pool!(store, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "UPDATE tickets SET subject = $1, status = $2, priority = $3, assignee = $4, team = $5, \
             tags = $6, due_at = $7, updated_at = $8 WHERE id = $9 AND tenant_id = $10",
        )
        .bind(&t.subject)
        .bind(enum_str(t.status))
        .bind(enum_str(t.priority))
        .bind(t.assignee.map(|a| a.as_text()))
        .bind(&t.team)
        .bind(Json(&t.tags))
        .bind(t.due_at)
        .bind(now)
        .bind(t.id.as_text())
        .bind(&tenant)
        .execute(&mut *tx)
        .await?;
        if let Some(item) = &status_item {
            insert_item!(
                &mut *tx,
                &tenant,
                t.customer_id.as_text(),
                &who.actor,
                now,
                item
            )
            .await?;
        }
        tx.commit().await?;
    });
    Ok(axum::Json(t))
}

// ---------------------------------------------------------------------------------------------
// CDRs

/// One call leg's detail record (GLOSSARY "CDR").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CdrRecord {
    /// Tenant.
    pub tenant: TenantId,
    /// The contact (acd-core contact id, text form).
    pub contact_id: String,
    /// Which leg: `caller` (trunk side) or `agent`.
    pub leg: String,
    /// `inbound` or `outbound`: decides whether the customer is the caller or the callee.
    pub direction: String,
    /// Leg start.
    pub started_at: DateTime<Utc>,
    /// Answer time (none if never answered).
    pub answered_at: Option<DateTime<Utc>>,
    /// Leg end.
    pub ended_at: DateTime<Utc>,
    /// Calling party.
    pub caller: String,
    /// Called party.
    pub callee: String,
    /// answered, abandoned, overflowed, failed, …
    pub result: String,
    /// Queue.
    pub queue: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Waiting time, ms.
    pub wait_ms: i64,
    /// Talk time, ms.
    pub talk_ms: i64,
    /// Wrap-up time, ms.
    pub wrap_ms: i64,
    /// Recording reference.
    pub recording: Option<String>,
    /// Quality statistics (MOS, loss, jitter …).
    #[schema(value_type = Object)]
    pub quality: Value,
    /// Voice quality as MOS x100 (E-model), when the media relay measured it.
    #[serde(default)]
    pub mos_x100: Option<i32>,
    /// Length of the recording, ms (pauses included).
    #[serde(default)]
    pub recording_ms: Option<i64>,
    /// The voicemail the caller left (file reference).
    #[serde(default)]
    pub voicemail: Option<String>,
    /// What a transfer did to this leg (e.g. `blind:1002`).
    #[serde(default)]
    pub transfer: Option<String>,
}

/// The wrap-up of a contact ended: its CDR rows (the legs an agent handled) get the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrWrapUp {
    /// Tenant.
    pub tenant: TenantId,
    /// The contact (acd-core contact id, text form).
    pub contact_id: String,
    /// Wrap-up duration, ms.
    pub wrap_ms: i64,
}

impl Store {
    /// Stores a CDR; when the customer's number is known in the tenant, the call also lands on
    /// that customer's timeline — both rows in one transaction. Returns the customer, if any.
    pub async fn insert_cdr(&self, c: &CdrRecord) -> Result<Option<CustomerId>, StoreError> {
        Ok(self
            .insert_cdrs(std::slice::from_ref(c))
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    /// Stores a batch of CDRs and their timeline items in one transaction (all or nothing):
    /// the SIP side's writer drains whatever accumulated into one call, so at 1,000 calls/s
    /// the database sees a few commits per second instead of two thousand. Returns each
    /// row's customer, if any, in order.
    pub async fn insert_cdrs(
        &self,
        cdrs: &[CdrRecord],
    ) -> Result<Vec<Option<CustomerId>>, StoreError> {
        // Customer look-ups are reads outside the transaction, so the write lock is held only
        // for the inserts.
        let mut customers = Vec::with_capacity(cdrs.len());
        for c in cdrs {
            let number = if c.direction == "outbound" {
                &c.callee
            } else {
                &c.caller
            };
            // Only the caller leg is the customer's call; agent legs would duplicate it.
            let customer = match normalize_e164(number).filter(|_| c.leg == "caller") {
                Some(n) => find_by_identity(self, c.tenant, IdentityKind::Phone, &n).await?,
                None => None,
            };
            customers.push(customer.map(|c| c.merged_into.unwrap_or(c.id)));
        }
        with_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for (c, customer_id) in cdrs.iter().zip(&customers) {
                let tenant = c.tenant.as_text();
                sqlx::query(
                    "INSERT INTO cdr (id, tenant_id, contact_id, leg, started_at, answered_at, ended_at, \
                     caller, callee, result, queue, agent, wait_ms, talk_ms, wrap_ms, recording, quality, \
                     mos_x100, recording_ms, voicemail, transfer) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                     $18, $19, $20, $21)",
                )
                .bind(uuid_v7_at(c.started_at).as_hyphenated().to_string())
                .bind(&tenant)
                .bind(&c.contact_id)
                .bind(&c.leg)
                .bind(c.started_at)
                .bind(c.answered_at)
                .bind(c.ended_at)
                .bind(&c.caller)
                .bind(&c.callee)
                .bind(&c.result)
                .bind(&c.queue)
                .bind(&c.agent)
                .bind(c.wait_ms)
                .bind(c.talk_ms)
                .bind(c.wrap_ms)
                .bind(&c.recording)
                .bind(Json(&c.quality))
                .bind(c.mos_x100)
                .bind(c.recording_ms)
                .bind(&c.voicemail)
                .bind(&c.transfer)
                .execute(&mut *tx)
                .await?;
                if let Some(cid) = customer_id {
                    let mos = c
                        .quality
                        .get("mos")
                        .and_then(Value::as_f64)
                        .or(c.mos_x100.map(|m| f64::from(m) / 100.0));
                    let item = NewTimelineItem {
                        kind: InteractionKind::Call,
                        contact_id: Some(c.contact_id.clone()),
                        queue: c.queue.clone(),
                        agent: c.agent.clone(),
                        direction: Some(c.direction.clone()),
                        wait_s: Some(c.wait_ms / 1000),
                        talk_s: Some(c.talk_ms / 1000),
                        wrap_s: Some(c.wrap_ms / 1000),
                        recording: c.recording.clone(),
                        quality: mos,
                        subject: Some(c.result.clone()),
                        ..Default::default()
                    };
                    insert_item!(
                        &mut *tx,
                        &tenant,
                        cid.as_text(),
                        "system",
                        c.started_at,
                        item
                    )
                    .await?;
                }
            }
            tx.commit().await?;
        });
        Ok(customers)
    }

    /// Records ended wrap-ups on the CDR rows of their contacts (the legs an agent handled)
    /// and on the contacts' call items in the timeline, in one transaction. Returns, per
    /// wrap-up, whether a CDR row was there to take it (a wrap-up of 0 s can arrive before the
    /// call's CDR; the writer retries those).
    pub async fn record_wrap_ups(&self, wraps: &[CdrWrapUp]) -> Result<Vec<bool>, StoreError> {
        let mut found = Vec::with_capacity(wraps.len());
        with_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for w in wraps {
                let n = sqlx::query(
                    "UPDATE cdr SET wrap_ms = $1 WHERE tenant_id = $2 AND contact_id = $3 \
                     AND agent IS NOT NULL",
                )
                .bind(w.wrap_ms)
                .bind(w.tenant.as_text())
                .bind(&w.contact_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE interactions SET wrap_s = $1 WHERE tenant_id = $2 AND contact_id = $3 \
                     AND kind = 'call'",
                )
                .bind(w.wrap_ms / 1000)
                .bind(w.tenant.as_text())
                .bind(&w.contact_id)
                .execute(&mut *tx)
                .await?;
                found.push(n > 0);
            }
            tx.commit().await?;
        });
        Ok(found)
    }
}

#[derive(sqlx::FromRow)]
struct CdrRow {
    tenant_id: String,
    contact_id: String,
    leg: String,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: DateTime<Utc>,
    caller: String,
    callee: String,
    result: String,
    queue: Option<String>,
    agent: Option<String>,
    wait_ms: i64,
    talk_ms: i64,
    wrap_ms: i64,
    recording: Option<String>,
    quality: Json<Value>,
    mos_x100: Option<i32>,
    recording_ms: Option<i64>,
    voicemail: Option<String>,
    transfer: Option<String>,
}

/// CDRs of the tenant (newest first), limited to released queues for service providers.
#[utoipa::path(get, path = "/api/v1/cdrs", tag = "reports", params(PageQuery),
    responses((status = 200, body = Vec<CdrRecord>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_cdrs(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(pq): ApiQuery<PageQuery>,
) -> Result<axum::Json<Vec<CdrRecord>>, ApiError> {
    who.require(Perm::ReportsRead)?;
    let (_, limit) = pq.validate()?;
    let rows = with_pool!(state.store(), |p| {
        sqlx::query_as::<_, CdrRow>(sqlx::AssertSqlSafe(format!(
            "SELECT tenant_id, contact_id, leg, started_at, answered_at, ended_at, caller, callee, \
             result, queue, agent, wait_ms, talk_ms, wrap_ms, recording, quality, mos_x100, \
             recording_ms, voicemail, transfer FROM cdr \
             WHERE tenant_id = $1 ORDER BY id DESC LIMIT {limit}"
        )))
        .bind(who.tenant.as_text())
        .fetch_all(p)
        .await?
    });
    let out = rows
        .into_iter()
        .filter(|r| r.queue.as_deref().is_some_and(|q| who.sees_queue(q)) || who.release.is_none())
        .map(CdrRow::record)
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(axum::Json(out))
}

impl CdrRow {
    fn record(r: CdrRow) -> Result<CdrRecord, StoreError> {
        Ok(CdrRecord {
            tenant: TenantId::parse(&r.tenant_id).ok_or(StoreError::Corrupt("cdr"))?,
            contact_id: r.contact_id,
            leg: r.leg,
            direction: String::new(),
            started_at: r.started_at,
            answered_at: r.answered_at,
            ended_at: r.ended_at,
            caller: r.caller,
            callee: r.callee,
            result: r.result,
            queue: r.queue,
            agent: r.agent,
            wait_ms: r.wait_ms,
            talk_ms: r.talk_ms,
            wrap_ms: r.wrap_ms,
            recording: r.recording,
            quality: r.quality.0,
            mos_x100: r.mos_x100,
            recording_ms: r.recording_ms,
            voicemail: r.voicemail,
            transfer: r.transfer,
        })
    }
}

const CDR_COLS: &str = "tenant_id, contact_id, leg, started_at, answered_at, ended_at, caller, \
    callee, result, queue, agent, wait_ms, talk_ms, wrap_ms, recording, quality, mos_x100, \
    recording_ms, voicemail, transfer";

impl Store {
    /// The CDR rows of one contact (its legs), oldest first.
    pub async fn cdrs_of_contact(
        &self,
        tenant: TenantId,
        contact_id: &str,
    ) -> Result<Vec<CdrRecord>, StoreError> {
        let sql = format!(
            "SELECT {CDR_COLS} FROM cdr WHERE tenant_id = $1 AND contact_id = $2 ORDER BY id"
        );
        let rows = with_pool!(self, |p| {
            sqlx::query_as::<_, CdrRow>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(tenant.as_text())
                .bind(contact_id)
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(CdrRow::record).collect()
    }

    /// How many CDR rows a tenant has.
    pub async fn cdr_count(&self, tenant: TenantId) -> Result<i64, StoreError> {
        let (n,): (i64,) = with_pool!(self, |p| {
            sqlx::query_as("SELECT COUNT(*) FROM cdr WHERE tenant_id = $1")
                .bind(tenant.as_text())
                .fetch_one(p)
                .await?
        });
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Screen pop

/// How many timeline items a screen pop carries.
pub const SCREEN_POP_ITEMS: i64 = 5;

impl AppState {
    /// Screen pop: finds the customer by caller number and pushes the card plus the latest
    /// timeline items to the agent's `/api/v1/events` sockets. Returns the event sent (the
    /// customer is `None` when the number is unknown or not E.164 — the agent still gets the pop).
    pub async fn screen_pop(
        &self,
        tenant: TenantId,
        agent: &str,
        caller_number: &str,
        contact_id: &str,
    ) -> Result<Event, StoreError> {
        self.screen_pop_with(tenant, agent, caller_number, contact_id, Default::default())
            .await
    }

    /// [`Self::screen_pop`] with the contact's attributes (IVR choices, digits the caller
    /// entered), which travel in the event for the agent to see.
    pub async fn screen_pop_with(
        &self,
        tenant: TenantId,
        agent: &str,
        caller_number: &str,
        contact_id: &str,
        attributes: std::collections::BTreeMap<String, String>,
    ) -> Result<Event, StoreError> {
        let customer = match normalize_e164(caller_number) {
            Some(n) => find_by_identity(self.store(), tenant, IdentityKind::Phone, &n).await?,
            None => None,
        };
        let timeline = match &customer {
            Some(c) => {
                let system = Principal::system(tenant);
                timeline(self.store(), &system, c.id, None, SCREEN_POP_ITEMS).await?
            }
            None => Vec::new(),
        };
        let event = Event::ScreenPop {
            contact_id: contact_id.to_owned(),
            caller_number: caller_number.to_owned(),
            customer: customer.map(Box::new),
            timeline,
            attributes,
        };
        self.events().publish(Envelope {
            tenant,
            target: Target::Agent(agent.to_owned()),
            event: event.clone(),
        });
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_normalisation() {
        assert_eq!(
            normalize_e164("+49 (30) 123-4567").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize_e164("0049 30 1234567").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize_e164("030 1234567"),
            None,
            "national format has no country"
        );
        assert_eq!(normalize_e164("+0301234567"), None);
        assert_eq!(
            normalize_e164("+49301234567890123"),
            None,
            "more than 15 digits"
        );
        assert_eq!(normalize_e164("+49 30 12x4567"), None);
        assert_eq!(normalize_e164("+123456"), None, "too short");
        assert_eq!(normalize_e164(""), None);
    }

    #[test]
    fn custom_field_types() {
        let d = |kind, options: &[&str]| FieldDef {
            key: "k".into(),
            label: "K".into(),
            kind,
            required: false,
            options: options.iter().map(|s| s.to_string()).collect(),
        };
        assert!(
            d(FieldKind::Integer, &[])
                .check(&serde_json::json!(3))
                .is_ok()
        );
        assert!(
            d(FieldKind::Integer, &[])
                .check(&serde_json::json!(3.5))
                .is_err()
        );
        assert!(
            d(FieldKind::Date, &[])
                .check(&serde_json::json!("2026-02-29"))
                .is_err()
        );
        assert!(
            d(FieldKind::Date, &[])
                .check(&serde_json::json!("2028-02-29"))
                .is_ok()
        );
        assert!(
            d(FieldKind::Select, &["a"])
                .check(&serde_json::json!("b"))
                .is_err()
        );
        assert!(
            d(FieldKind::Boolean, &[])
                .check(&serde_json::json!("true"))
                .is_err()
        );
        assert!(
            d(FieldKind::Text, &[])
                .check(&serde_json::Value::Null)
                .is_ok()
        );
    }
}
