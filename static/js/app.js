// Secret Keys — the little JavaScript htmx does not cover: the + menu of value fields,
// reference chips, repeatable rows, dialogs. No inline scripts (CSP): everything is wired
// here through data- attributes.
"use strict";

(function () {
  const REFERENCE = /\{\{\s*(secret:([0-9a-fA-F-]{36})|inputs\.[A-Za-z_][A-Za-z0-9_]*|steps\.[0-9]+(?:\.[A-Za-z0-9_-]+)*)\s*\}\}/g;
  const builderDataElement = document.getElementById("builder-data");
  const builder = builderDataElement ? JSON.parse(builderDataElement.textContent) : null;
  const keyNames = builder ? builder.keyNames : {};
  const urls = builder
    ? builder.urls
    : { picker: "/keys/picker/", names: "/keys/names/", create: "/keys/new/", manage: "/keys/manage/" };
  let rowCounter = 0;

  // --- Chips: a field's references, by the keys' current names ---------------------------

  function renderChips(field) {
    const box = document.querySelector(`[data-chips-for="${field.id}"]`);
    if (!box) return;
    box.replaceChildren();
    for (const match of field.value.matchAll(REFERENCE)) {
      const chip = document.createElement("span");
      chip.className = "chip";
      if (match[2]) {
        const name = keyNames[match[2].toLowerCase()];
        const icon = document.createElement("span");
        icon.className = "key-icon";
        icon.setAttribute("aria-hidden", "true");
        chip.append(icon, name || "key not available to you");
        if (!name) chip.classList.add("unavailable");
        chip.title = match[0];
      } else {
        chip.classList.add("variable");
        chip.textContent = match[1];
      }
      box.append(chip);
    }
  }

  function renderAllChips() {
    document.querySelectorAll(".ref-input").forEach(renderChips);
  }

  async function refreshKeyNames() {
    const ids = new Set();
    document.querySelectorAll(".ref-input").forEach((field) => {
      for (const match of field.value.matchAll(REFERENCE)) if (match[2]) ids.add(match[2].toLowerCase());
    });
    if (ids.size === 0) return;
    const query = [...ids].map((id) => `id=${encodeURIComponent(id)}`).join("&");
    const response = await fetch(`${urls.names}?${query}`, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const names = await response.json();
    for (const id of ids) delete keyNames[id];
    Object.assign(keyNames, names);
    renderAllChips();
  }

  document.addEventListener("input", (event) => {
    if (event.target.classList && event.target.classList.contains("ref-input")) renderChips(event.target);
  });

  // --- Repeatable rows (headers, query parameters, fields, variables, grants) ------------

  document.addEventListener("click", (event) => {
    const add = event.target.closest("[data-add-row]");
    if (add) {
      const rows = add.closest("[data-rows]");
      const template = rows.querySelector("template[data-row-template]");
      const list = rows.querySelector("[data-rows-list]");
      rowCounter += 1;
      const index = `n${rowCounter}`;
      const number = String(list.children.length + 1);
      const html = template.innerHTML.replaceAll("__index__", index).replaceAll("__number__", number);
      list.insertAdjacentHTML("beforeend", html);
      const added = list.lastElementChild;
      const first = added.querySelector("input, select");
      if (first) first.focus();
      return;
    }
    const remove = event.target.closest("[data-remove-row]");
    if (remove) {
      const row = remove.closest("[data-row]");
      const rows = row.closest("[data-rows]");
      row.remove();
      const next = rows.querySelector("[data-add-row]");
      if (next) next.focus();
    }
  });

  // --- Body type: show the fields or the raw JSON editor --------------------------------

  document.addEventListener("change", (event) => {
    if (event.target.name !== "body-type") return;
    const form = event.target.closest("form");
    form.querySelectorAll("[data-body]").forEach((section) => {
      section.hidden = section.dataset.body !== event.target.value;
    });
  });

  // --- Confirmations ---------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  // --- Dialogs (Create Secret Key modal, Manage Secret Keys drawer) ----------------------

  const modal = document.getElementById("modal");
  const panel = document.getElementById("panel");
  let returnFocusTo = null;
  let insertTarget = null; // { field, start, end } when Create was opened from a + menu

  async function loadInto(dialog, url) {
    const container = dialog.querySelector("div");
    const response = await fetch(url, { headers: { "HX-Request": "true" } });
    container.innerHTML = await response.text();
    if (window.htmx) window.htmx.process(container);
    if (!dialog.open) dialog.showModal();
    const focusable = container.querySelector("input:not([type=hidden]), select, textarea, button");
    if (focusable) focusable.focus();
  }

  function openCreate(target) {
    insertTarget = target;
    returnFocusTo = target ? target.field : document.activeElement;
    loadInto(modal, urls.create);
  }

  function openManage(url) {
    returnFocusTo = returnFocusTo || document.activeElement;
    loadInto(panel, url || urls.manage);
  }

  for (const dialog of [modal, panel]) {
    if (!dialog) continue;
    dialog.addEventListener("close", () => {
      if (dialog === modal) insertTarget = null;
      if (returnFocusTo && document.contains(returnFocusTo)) returnFocusTo.focus();
      returnFocusTo = null;
    });
  }

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-close-dialog]")) {
      event.target.closest("dialog").close();
    } else if (event.target.closest("[data-open-create]")) {
      openCreate(null);
    } else if (event.target.closest("[data-open-manage]")) {
      returnFocusTo = event.target.closest("[data-open-manage]");
      openManage();
    } else if (event.target.closest("[data-open-key]")) {
      const opener = event.target.closest("[data-open-key]");
      if (!panel.open) returnFocusTo = opener;
      openManage(opener.dataset.openKey);
    }
  });

  document.body.addEventListener("secretKeyCreated", (event) => {
    const created = event.detail;
    keyNames[created.id.toLowerCase()] = created.name;
    if (insertTarget) {
      const target = insertTarget;
      insertTarget = null;
      returnFocusTo = null;
      modal.close();
      insertReference(target, `{{secret:${created.id}}}`);
    }
  });

  document.body.addEventListener("secretKeysChanged", () => {
    refreshKeyNames();
    const table = document.querySelector("[data-keys-page] #key-table");
    if (table && window.htmx) {
      const search = document.getElementById("key-search");
      const query = search ? encodeURIComponent(search.value) : "";
      window.htmx.ajax("GET", `${urls.manage}?list=1&q=${query}`, { target: table });
    }
  });

  // --- The + menu ------------------------------------------------------------------------

  const menu = document.getElementById("insert-menu");
  let menuTarget = null; // { field, start, end, button }

  function insertReference(target, text) {
    const field = target.field;
    const start = target.start ?? field.value.length;
    const end = target.end ?? start;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    field.dispatchEvent(new Event("input", { bubbles: true }));
    field.focus();
    const caret = start + text.length;
    field.setSelectionRange(caret, caret);
  }

  function menuItem(label, options = {}) {
    const item = document.createElement("li");
    item.setAttribute("role", "none");
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("role", "menuitem");
    button.tabIndex = -1;
    button.textContent = label;
    if (options.submenu) {
      button.setAttribute("aria-haspopup", "menu");
      button.setAttribute("aria-expanded", "false");
      const arrow = document.createElement("span");
      arrow.setAttribute("aria-hidden", "true");
      arrow.textContent = "›";
      button.append(arrow);
    }
    if (options.className) button.classList.add(options.className);
    item.append(button);
    return item;
  }

  function variableItems(step) {
    const items = [];
    for (const name of builder.inputs) items.push({ label: `Input: ${name}`, text: `{{inputs.${name}}}` });
    for (const earlier of builder.steps) {
      if (earlier.position >= step) continue;
      const paths =
        earlier.type === "run_code" ? ["result"] : ["body", "status_code", "headers"];
      for (const path of paths) {
        items.push({
          label: `Step ${earlier.position} (${earlier.name}) › ${path}`,
          text: `{{steps.${earlier.position}.${path}}}`,
        });
      }
    }
    return items;
  }

  function buildMenu(step) {
    menu.replaceChildren();
    const list = document.createElement("ul");
    list.className = "menu-list";
    list.setAttribute("role", "none");

    const variables = menuItem("Insert Variable", { submenu: true });
    const variablesMenu = document.createElement("ul");
    variablesMenu.className = "menu submenu";
    variablesMenu.setAttribute("role", "menu");
    variablesMenu.setAttribute("aria-label", "Variables");
    variablesMenu.hidden = true;
    const options = variableItems(step);
    if (options.length === 0) {
      const note = document.createElement("li");
      note.className = "menu-note";
      note.setAttribute("role", "none");
      note.textContent = "No trigger inputs or earlier steps yet.";
      variablesMenu.append(note);
    }
    for (const option of options) {
      const item = menuItem(option.label);
      item.firstChild.dataset.insert = option.text;
      variablesMenu.append(item);
    }
    variables.append(variablesMenu);

    const keys = menuItem("Insert a Secret Key", { submenu: true });
    const keysMenu = document.createElement("div");
    keysMenu.className = "menu submenu";
    keysMenu.setAttribute("role", "menu");
    keysMenu.setAttribute("aria-label", "Secret keys");
    keysMenu.hidden = true;
    const searchBox = document.createElement("div");
    searchBox.className = "menu-search";
    const search = document.createElement("input");
    search.type = "search";
    search.placeholder = "Search keys…";
    search.setAttribute("aria-label", "Search secret keys");
    search.autocomplete = "off";
    search.dataset.keySearch = "";
    searchBox.append(search);
    const heading = document.createElement("div");
    heading.className = "menu-heading";
    heading.textContent = "Keys you may use";
    const picker = document.createElement("ul");
    picker.className = "picker-list";
    picker.setAttribute("role", "none");
    picker.dataset.picker = "";
    const separator = document.createElement("div");
    separator.className = "separator";
    const createList = document.createElement("ul");
    createList.setAttribute("role", "none");
    createList.className = "picker-list";
    const create = menuItem("+ Create Secret Key", { className: "create-item" });
    create.firstChild.dataset.createKey = "";
    createList.append(create);
    keysMenu.append(searchBox, heading, picker, separator, createList);
    keys.append(keysMenu);

    const manage = menuItem("Manage Secret Keys");
    manage.firstChild.dataset.manageKeys = "";
    const divider = document.createElement("li");
    divider.className = "separator";
    divider.setAttribute("role", "separator");

    list.append(variables, keys, divider, manage);
    menu.append(list);
  }

  let pickerRequest = 0;
  async function loadPicker(query) {
    const picker = menu.querySelector("[data-picker]");
    const request = ++pickerRequest;
    const response = await fetch(`${urls.picker}?q=${encodeURIComponent(query)}`, {
      headers: { "HX-Request": "true" },
    });
    const html = await response.text();
    if (request !== pickerRequest || !picker) return;
    // A list that arrives while a key in it has the focus (keyboard users move on before
    // the last search answers) keeps the focus on that key, or the first one.
    const focused = picker.contains(document.activeElement) ? document.activeElement : null;
    picker.innerHTML = html;
    if (focused) {
      const same = [...picker.querySelectorAll("[role=menuitem]")].find(
        (item) => item.dataset.keyId === focused.dataset.keyId,
      );
      (same || picker.querySelector("[role=menuitem]") || menu.querySelector("[data-key-search]"))?.focus();
    }
  }

  function topItems() {
    return [...menu.querySelectorAll(".menu-list > li > [role=menuitem]")];
  }

  function submenuOf(item) {
    return item.parentElement.querySelector(".submenu");
  }

  function closeSubmenus(except) {
    menu.querySelectorAll(".submenu").forEach((submenu) => {
      if (submenu === except) return;
      submenu.hidden = true;
      const owner = submenu.parentElement.querySelector("[aria-haspopup]");
      if (owner) owner.setAttribute("aria-expanded", "false");
    });
  }

  function openSubmenu(item, focusInside) {
    const submenu = submenuOf(item);
    if (!submenu) return;
    closeSubmenus(submenu);
    submenu.hidden = false;
    item.setAttribute("aria-expanded", "true");
    if (submenu.querySelector("[data-picker]") && !submenu.dataset.loaded) {
      submenu.dataset.loaded = "yes";
      loadPicker("");
    }
    if (focusInside) {
      const first = submenu.querySelector("[data-key-search]") || submenu.querySelector("[role=menuitem]");
      if (first) first.focus();
    }
  }

  function openMenu(button) {
    const field = document.getElementById(button.dataset.field);
    const form = button.closest("[data-action-form]");
    const step = form ? Number(form.dataset.step) : 1;
    menuTarget = { field, start: field.selectionStart, end: field.selectionEnd, button };
    buildMenu(step);
    const box = button.getBoundingClientRect();
    menu.style.top = `${window.scrollY + box.bottom + 4}px`;
    menu.style.left = `${Math.max(8, window.scrollX + box.right - 240)}px`;
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    topItems()[0].focus();
  }

  function closeMenu(returnTo) {
    if (menu.hidden) return;
    menu.hidden = true;
    if (menuTarget) menuTarget.button.setAttribute("aria-expanded", "false");
    if (returnTo && menuTarget) (returnTo === "button" ? menuTarget.button : menuTarget.field).focus();
  }

  if (menu) {
    document.addEventListener("click", (event) => {
      const plus = event.target.closest(".plus-button");
      if (plus) {
        if (!menu.hidden && menuTarget && menuTarget.button === plus) closeMenu("button");
        else openMenu(plus);
        return;
      }
      if (!menu.contains(event.target)) closeMenu(null);
    });

    menu.addEventListener("click", (event) => {
      const item = event.target.closest("[role=menuitem]");
      if (!item) return;
      if (item.getAttribute("aria-haspopup")) {
        openSubmenu(item, true);
      } else if (item.dataset.insert || item.dataset.keyId) {
        const text = item.dataset.insert || `{{secret:${item.dataset.keyId}}}`;
        if (item.dataset.keyId) keyNames[item.dataset.keyId.toLowerCase()] = item.dataset.keyName;
        const target = menuTarget;
        closeMenu(null);
        insertReference(target, text);
      } else if ("createKey" in item.dataset) {
        const target = menuTarget;
        closeMenu(null);
        openCreate(target);
      } else if ("manageKeys" in item.dataset) {
        const target = menuTarget;
        closeMenu(null);
        returnFocusTo = target.field;
        openManage();
      }
    });

    // Submenus open on hover and on keyboard focus.
    menu.addEventListener("mouseover", (event) => {
      const item = event.target.closest(".menu-list > li > [aria-haspopup]");
      if (item) openSubmenu(item, false);
    });
    menu.addEventListener("focusin", (event) => {
      const item = event.target.closest(".menu-list > li > [aria-haspopup]");
      if (item) openSubmenu(item, false);
    });

    menu.addEventListener("input", (event) => {
      if ("keySearch" in event.target.dataset) loadPicker(event.target.value);
    });

    menu.addEventListener("keydown", (event) => {
      const current = document.activeElement;
      const submenu = current.closest(".submenu");
      const level = submenu
        ? [...submenu.querySelectorAll("[data-key-search], [role=menuitem]")]
        : topItems();
      const index = level.indexOf(current);
      switch (event.key) {
        case "ArrowDown":
          event.preventDefault();
          level[(index + 1) % level.length].focus();
          break;
        case "ArrowUp":
          event.preventDefault();
          level[(index - 1 + level.length) % level.length].focus();
          break;
        case "Home":
          event.preventDefault();
          level[0].focus();
          break;
        case "End":
          event.preventDefault();
          level[level.length - 1].focus();
          break;
        case "ArrowRight":
          if (!submenu && current.getAttribute("aria-haspopup")) {
            event.preventDefault();
            openSubmenu(current, true);
          }
          break;
        case "ArrowLeft":
          if (submenu && !(current.dataset && "keySearch" in current.dataset && current.value)) {
            event.preventDefault();
            const owner = submenu.parentElement.querySelector("[aria-haspopup]");
            // Focus first: focusing the owner would reopen a still-open submenu.
            owner.focus();
            closeSubmenus(null);
          }
          break;
        case "Escape":
          event.preventDefault();
          if (submenu) {
            const owner = submenu.parentElement.querySelector("[aria-haspopup]");
            // Focus first: focusing the owner would reopen a still-open submenu.
            owner.focus();
            closeSubmenus(null);
          } else {
            closeMenu("field");
          }
          break;
        case "Tab":
          closeMenu(null);
          break;
        case "Enter":
          if (current.dataset && "keySearch" in current.dataset) {
            event.preventDefault();
            const first = submenu.querySelector("[data-picker] [role=menuitem]");
            if (first) first.focus();
          }
          break;
        default:
      }
    });
  }

  renderAllChips();
})();

// --- Copy buttons: [data-copy="<field id>"] copies that field's text -----------------------
// (the webhook URL, shown once). [data-copy-status="<field id>"] says what happened.

(function () {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const field = document.getElementById(button.dataset.copy);
    if (!field) return;
    const status = document.querySelector(`[data-copy-status="${button.dataset.copy}"]`);
    let copied = false;
    try {
      await navigator.clipboard.writeText(field.value);
      copied = true;
    } catch (error) {
      // No Clipboard API (a plain-HTTP origin, an older browser): the selection, copied.
      field.focus();
      field.select();
      copied = document.execCommand("copy");
    }
    if (status) status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
  });
})();
