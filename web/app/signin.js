// Where the page's viewer tokens come from. A browser never holds an app secret: something
// that does (the app's backend; in the demo, `xp2p demo` itself) mints a short-lived viewer
// token for it (docs/protocol.md §4a). The demo hands the page a one-time sign-in code in the
// address (`#login=CODE`), traded here for tokens. An operator points the page at their own
// backend with `<meta name="xp2p-token-url" content="...">`: that URL gets the same POST
// (with the page's cookies), and must answer `{"token", "expires_at"}`.

const DEMO_TOKEN_URL = '/api/v1/demo/viewer-token';
const CODE_KEY = 'xp2p-login-code';
/** A token is renewed when it has less than this left (the SDK's own margin too). */
const RENEW_MARGIN_S = 60;

/**
 * @typedef {object} ViewerToken
 * @property {string} token
 * @property {number} expiresAt unix seconds
 * @property {string[]} permissions
 */

/** The cloud refused to hand out a token; `code` is its error code (`bad_code`...). */
export class SignInError extends Error {
  /**
   * @param {string} message
   * @param {string} code
   * @param {number} status HTTP status, 0 when there was no answer
   */
  constructor(message, code, status) {
    super(message);
    this.name = 'SignInError';
    this.code = code;
    this.status = status;
  }
}

/** The token URL the page was configured with (the demo's by default). */
export function tokenUrl() {
  const meta = document.querySelector('meta[name="xp2p-token-url"]');
  return meta?.getAttribute('content') || DEMO_TOKEN_URL;
}

/** True when tokens come from the demo route, which needs the sign-in code. */
export function needsLoginCode() {
  return new URL(tokenUrl(), location.href).pathname === DEMO_TOKEN_URL;
}

/**
 * The sign-in code: taken from `#login=` (then removed from the address bar, so it is not
 * bookmarked, shared or kept in history) and kept for this tab in sessionStorage, so a reload
 * still signs in.
 * @returns {string | null}
 */
export function takeLoginCode() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const code = hash.get('login');
  if (code) {
    try {
      sessionStorage.setItem(CODE_KEY, code);
    } catch {
      // Storage refused (a private mode): the code still works for this page's life.
    }
    hash.delete('login');
    const rest = hash.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    return code;
  }
  try {
    return sessionStorage.getItem(CODE_KEY);
  } catch {
    return null;
  }
}

/** Forgets the stored code (it was refused: the next load shows the sign-in message). */
export function forgetLoginCode() {
  try {
    sessionStorage.removeItem(CODE_KEY);
  } catch {
    // nothing stored
  }
}

/**
 * One token from the configured URL. The one function to replace for another backend.
 * @param {string | null} code the demo's sign-in code
 * @returns {Promise<ViewerToken>}
 */
export async function fetchViewerToken(code) {
  let response;
  try {
    response = await fetch(tokenUrl(), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(code ? { code } : {}),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (err) {
    throw new SignInError(`the cloud did not answer (${err instanceof Error ? err.message : err})`, 'unreachable', 0);
  }
  /** @type {any} */
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: reported below by status
  }
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new SignInError(
      `${response.status} ${error.code ?? 'error'}: ${error.message ?? response.statusText}`,
      String(error.code ?? 'http_error'),
      response.status,
    );
  }
  if (typeof body?.token !== 'string' || typeof body?.expires_at !== 'number') {
    throw new SignInError('the token URL answered without a token', 'bad_answer', response.status);
  }
  return {
    token: body.token,
    expiresAt: body.expires_at,
    permissions: Array.isArray(body.permissions) ? body.permissions.map(String) : [],
  };
}

/**
 * A token source: `get()` gives a token valid for at least RENEW_MARGIN_S more, fetching a
 * new one only when needed, and once for any number of callers at the same moment.
 * @param {() => Promise<ViewerToken>} fetcher
 */
export function tokenCache(fetcher) {
  /** @type {ViewerToken | null} */
  let current = null;
  /** @type {Promise<ViewerToken> | null} */
  let pending = null;
  return {
    /** @returns {Promise<ViewerToken>} */
    get() {
      if (current && current.expiresAt - Date.now() / 1000 > RENEW_MARGIN_S) return Promise.resolve(current);
      pending ??= fetcher().then(
        (token) => {
          current = token;
          pending = null;
          return token;
        },
        (err) => {
          pending = null;
          throw err;
        },
      );
      return pending;
    },
    /** The permissions of the last token (empty before the first). */
    permissions() {
      return current?.permissions ?? [];
    },
  };
}
