// The console's only script: confirmations, the dashboard's bar heights, and the live call log.
// Caller data is put in with textContent only, never as HTML.
"use strict";

function confirmForms(root) {
  root.querySelectorAll("form[data-confirm]").forEach((form) => {
    if (form.dataset.bound) return;
    form.dataset.bound = "1";
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

function chart() {
  document.querySelectorAll(".bar[data-h]").forEach((bar) => {
    bar.style.height = bar.dataset.h + "%";
  });
}

function liveRow(call) {
  const template = document.getElementById("row-template");
  const row = template.content.firstElementChild.cloneNode(true);
  row.dataset.rowid = call.rowid;
  row.dataset.e164 = call.e164 || "";
  row.classList.add("new");
  row.querySelector(".c-time").textContent = call.time;
  const num = row.querySelector(".c-num");
  if (call.e164) {
    const link = document.createElement("a");
    link.href = "/numbers/" + encodeURIComponent(call.e164);
    link.textContent = call.number;
    num.appendChild(link);
  } else {
    num.textContent = call.number;
  }
  row.querySelector(".c-name").textContent = call.name;
  row.querySelector(".c-category").textContent = call.category;
  const route = row.querySelector(".c-route");
  route.textContent = call.route;
  route.className = "c-route route-" + call.route.split(" ")[0];
  row.querySelector(".c-outcome").textContent = call.outcome;
  const list = row.querySelector(".reasons ul");
  call.reasons.forEach((reason) => {
    const item = document.createElement("li");
    item.textContent = reason;
    list.appendChild(item);
  });
  if (call.e164) {
    row.querySelectorAll("input[name=number]").forEach((input) => { input.value = call.e164; });
  } else {
    row.querySelector(".actions").textContent = "";
  }
  return row;
}

function live() {
  const badge = document.getElementById("live");
  if (!badge || !window.EventSource) return;
  const body = document.getElementById("call-rows");
  const source = new EventSource("/calls/stream?after=" + encodeURIComponent(badge.dataset.after));
  source.addEventListener("call", (event) => {
    const call = JSON.parse(event.data);
    if (body.querySelector('tr[data-rowid="' + String(Number(call.rowid)) + '"]')) return;
    const row = liveRow(call);
    body.insertBefore(row, body.firstChild);
    confirmForms(row);
    const empty = document.getElementById("no-calls");
    if (empty) empty.remove();
  });
  source.addEventListener("logout", () => { source.close(); window.location.href = "/login"; });
  source.onerror = () => { badge.classList.add("off"); };
  source.onopen = () => { badge.classList.remove("off"); };
}

document.addEventListener("DOMContentLoaded", () => {
  confirmForms(document);
  chart();
  live();
});
