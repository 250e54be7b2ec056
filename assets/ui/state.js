// What several modules read and change. Each module keeps its own state to itself; this is only
// what crosses them (the photo itself is photo.js's `photo`).
export const store = {
  serverStatus: null,   // the last /api/status body (status.js polls it)
  running: null,        // the request in flight, {kind: "chat" | "plate", controller, sid, bubble,
                        // stopping, onStopping}: one at a time (the server runs one generation at a
                        // time anyway); Stop (chat.js) treats a plate reading differently
  sessionId: null,      // server session for the current view; null = upload before the next question
  plateResult: null,    // the finished nameplate reading the table shows (and Copy copies); null
                        // while one is read
  modelNotice: false,   // the banner currently shows the no-model / model-error message
};
