"""``/api/explorer``: an offline API explorer.

FastAPI's Swagger UI loads its JavaScript and CSS from a CDN and no installed package ships
those assets, so this is a small self-contained page instead: it reads the app's OpenAPI
document, lists every operation by tag and lets you send requests with your API key (kept in
the browser's localStorage) and see the response with its status and headers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nn-workbench API explorer</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;color:#222}
header{background:#1f2937;color:#fff;padding:10px 16px;display:flex;gap:12px;align-items:center}
header input{flex:1;max-width:420px;padding:4px}
main{padding:8px 16px}
h2{border-bottom:1px solid #ddd;margin:18px 0 6px}
details{border:1px solid #ddd;border-radius:4px;margin:4px 0}
summary{cursor:pointer;padding:6px;font-family:monospace}
.m{display:inline-block;width:64px;font-weight:bold}
.GET{color:#2563eb}.POST{color:#16a34a}.DELETE{color:#dc2626}.PUT,.PATCH{color:#d97706}
form{padding:6px 12px}
label{display:block;margin:4px 0}
label input{width:320px}
textarea{width:100%;height:110px;font-family:monospace}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:360px}
</style></head>
<body><header><b>nn-workbench API explorer</b>
<input id="key" placeholder="API key (Authorization: Bearer ...)">
<span id="info"></span></header><main id="ops">loading __SCHEMA__ ...</main>
<script>
const keyBox = document.getElementById("key");
keyBox.value = localStorage.getItem("wb_api_key") || "";
keyBox.onchange = () => localStorage.setItem("wb_api_key", keyBox.value);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  Object.assign(e, attrs || {});
  for (const k of kids) e.append(k);
  return e;
}
function resolve(spec, schema) {
  while (schema && schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}
function example(spec, schema, depth) {
  schema = resolve(spec, schema);
  if (depth > 4) return null;
  if (schema.default !== undefined) return schema.default;
  if (schema.anyOf) return example(spec, schema.anyOf[0], depth + 1);
  if (schema.type === "object" || schema.properties) {
    const out = {};
    for (const [k, v] of Object.entries(schema.properties || {}))
      if ((schema.required || []).includes(k)) out[k] = example(spec, v, depth + 1);
    return out;
  }
  if (schema.type === "array") return [];
  if (schema.type === "integer" || schema.type === "number") return schema.minimum || 0;
  if (schema.type === "boolean") return false;
  if (schema.enum) return schema.enum[0];
  return "";
}
function operation(spec, path, method, op) {
  const form = el("form");
  const params = op.parameters || [];
  for (const p of params) {
    const input = el("input", {name: p.name});
    input.dataset.where = p.in;
    form.append(el("label", {}, `${p.name} (${p.in}${p.required ? ", required" : ""}) `, input));
  }
  let body = null;
  const content = op.requestBody && op.requestBody.content["application/json"];
  if (content) {
    body = el("textarea", {},
      JSON.stringify(example(spec, content.schema, 0), null, 2));
    form.append(el("label", {}, "JSON body"), body);
  }
  const out = el("pre");
  form.append(el("button", {type: "submit"}, "Send"), out);
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    for (const input of form.querySelectorAll("input")) {
      if (!input.value) continue;
      if (input.dataset.where === "path") url = url.replace(`{${input.name}}`, encodeURIComponent(input.value));
      else if (input.dataset.where === "query") query.append(input.name, input.value);
    }
    const headers = {};
    if (keyBox.value) headers.Authorization = "Bearer " + keyBox.value;
    if (body) headers["Content-Type"] = "application/json";
    const qs = query.toString();
    const resp = await fetch(url + (qs ? "?" + qs : ""),
      {method: method.toUpperCase(), headers, body: body ? body.value : undefined});
    const text = await resp.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {}
    const hdrs = [...resp.headers].map(([k, v]) => `${k}: ${v}`).join("\\n");
    out.textContent = `${resp.status} ${resp.statusText}\\n${hdrs}\\n\\n${shown}`;
  };
  return el("details", {},
    el("summary", {}, el("span", {className: "m " + method.toUpperCase()}, method.toUpperCase()),
       path, "  ", el("i", {}, op.summary || "")),
    el("div", {style: "padding:0 12px;white-space:pre-wrap"}, op.description || ""), form);
}
fetch("__SCHEMA__").then(r => r.json()).then(spec => {
  document.getElementById("info").textContent = `${spec.info.title} ${spec.info.version}`;
  const byTag = {};
  for (const [path, item] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const tag = (op.tags || ["other"])[0];
      (byTag[tag] = byTag[tag] || []).push(operation(spec, path, method, op));
    }
  const main = document.getElementById("ops");
  main.textContent = "";
  for (const [tag, ops] of Object.entries(byTag)) main.append(el("h2", {}, tag), ...ops);
}).catch(err => { document.getElementById("ops").textContent = "could not load the schema: " + err; });
</script></body></html>
"""


@router.get("/api/explorer", response_class=HTMLResponse)
def explorer(request: Request) -> HTMLResponse:
    schema_url = request.scope.get("root_path", "") + (request.app.openapi_url or "/openapi.json")
    return HTMLResponse(_PAGE.replace("__SCHEMA__", schema_url))
