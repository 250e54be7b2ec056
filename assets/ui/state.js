// What several modules read and change. Each module keeps its own state to itself; this is only
// what crosses them (the photo itself is photo.js's `photo`).
export const store = {
  serverStatus: null,   // the last /api/status body (status.js polls it)
  running: null,        // the request in flight, {controller, sid, bubble}: one at a time (the server
                        // runs one generation at a time anyway)
  sessionId: null,      // server session for the current view; null = upload before the next question
  plateResult: null,    // the nameplate reading the table shows (and Copy copies)
  modelNotice: false,   // the banner currently shows the no-model / model-error message
};
