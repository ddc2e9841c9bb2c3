// Modal dialogs (native <dialog>: focus trap, Escape and focus return come with it), each
// wrapped as a promise of the answer (null when cancelled).

const $ = (id) => document.getElementById(id);

function run(dialog, form, submit, { onOpen } = {}) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (value) => {
      if (settled) return;
      settled = true;
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      dialog.removeEventListener("click", onClick);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const value = submit();
      if (value !== undefined) finish(value);
    };
    const onClose = () => finish(null);
    const onClick = (event) => {
      if (event.target.closest("[data-close]")) finish(null);
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.addEventListener("click", onClick);
    dialog.showModal();
    onOpen?.();
  });
}

function showError(element, input, message) {
  element.textContent = message ?? "";
  element.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/**
 * Ask for a line of text. `validate(value)` returns an error message or null;
 * `select` is the [start, end] range to pre-select (e.g. a file name without its extension).
 */
export function askText({ title, label, value = "", submitLabel = "OK", validate, select }) {
  const dialog = $("text-dialog");
  const input = $("text-input");
  const error = $("text-error");
  $("text-dialog-title").textContent = title;
  $("text-label").textContent = label;
  $("text-submit").textContent = submitLabel;
  input.value = value;
  showError(error, input, null);
  return run(
    dialog,
    $("text-form"),
    () => {
      const problem = validate?.(input.value) ?? null;
      showError(error, input, problem);
      if (problem) {
        input.focus();
        return undefined;
      }
      return input.value;
    },
    {
      onOpen: () => {
        input.focus();
        if (select) input.setSelectionRange(select[0], select[1]);
        else input.select();
      },
    },
  );
}

/** Ask to confirm a (usually destructive) action; Cancel has the focus. */
export async function confirmAction({ title, message, submitLabel = "OK", danger = true }) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-message").textContent = message;
  const submit = $("confirm-submit");
  submit.textContent = submitLabel;
  submit.className = danger ? "danger" : "primary";
  const answer = await run(dialog, $("confirm-form"), () => true, {
    onOpen: () => dialog.querySelector("[data-close]").focus(),
  });
  return answer === true;
}

/** Ask for the access token; `problem` explains why it is asked again. */
export function askToken(problem) {
  const dialog = $("token-dialog");
  const input = $("token-input");
  const error = $("token-error");
  input.value = "";
  showError(error, input, problem);
  return run(
    dialog,
    $("token-form"),
    () => {
      const token = input.value.trim();
      if (!token) {
        showError(error, input, "Enter the token.");
        return undefined;
      }
      return token;
    },
    { onOpen: () => input.focus() },
  );
}
