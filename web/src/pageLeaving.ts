/**
 * Whether the page is being left (a reload, the tab closed, another site opened). The browser
 * then cuts the requests in flight, and they fail like a lost connection; what such a failure
 * would do (give a message back, forget that it was sent) is left to the next page, which learns
 * from the server what became of it.
 */
let leaving = false;

export function pageIsLeaving(): boolean {
  return leaving;
}

window.addEventListener('beforeunload', () => {
  leaving = true;
  // Still here a moment later: the page was not left after all (a link to a download).
  setTimeout(() => {
    leaving = false;
  }, 1000);
});
window.addEventListener('pagehide', () => {
  leaving = true;
});
// Shown again from the back/forward cache: the page lives on.
window.addEventListener('pageshow', () => {
  leaving = false;
});
