import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import App from "./App.jsx";

// The signed-in user; here simply from the address: http://localhost:5173/?userId=u1
const userId = new URLSearchParams(location.search).get("userId") ?? "u1";

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App userId={userId} />
  </StrictMode>,
);
