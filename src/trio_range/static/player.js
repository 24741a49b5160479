// The trio_range player: plays one file of /media/ and lists the others in a picker.
// Every URL is a path on the server that served the page, so it works through the proxy.
"use strict";

(() => {
  const video = document.getElementById("video");
  const picker = document.getElementById("file");
  const state = document.getElementById("state");

  // "sub/clip 1.mp4" -> "/media/sub/clip%201.mp4": each segment encoded, the slashes kept.
  const mediaUrl = (name) => "/media/" + name.split("/").map(encodeURIComponent).join("/");

  const chosen = () =>
    new URLSearchParams(location.search).get("file") || video.dataset.defaultFile;

  const show = (text, isError) => {
    state.textContent = text;
    state.classList.toggle("error", Boolean(isError));
  };

  const play = (name) => {
    video.src = mediaUrl(name);
    // Browsers allow autoplay of muted media; a refusal just leaves the controls to the user.
    video.play().catch(() => {});
  };

  const describe = () => {
    const buffered = [];
    for (let i = 0; i < video.buffered.length; i += 1) {
      buffered.push(video.buffered.start(i).toFixed(1) + "-" + video.buffered.end(i).toFixed(1));
    }
    const total = Number.isFinite(video.duration) ? video.duration.toFixed(1) : "?";
    show(video.currentTime.toFixed(1) + " s of " + total + " s; buffered " +
         (buffered.join(", ") || "nothing"));
  };

  for (const event of ["loadedmetadata", "timeupdate", "seeked", "progress"]) {
    video.addEventListener(event, describe);
  }
  video.addEventListener("error", () => {
    show("cannot play " + video.currentSrc + " (media error " +
         (video.error ? video.error.code : "?") + ")", true);
  });

  picker.addEventListener("change", () => {
    const url = new URL(location.href);
    url.searchParams.set("file", picker.value);
    history.replaceState(null, "", url);
    play(picker.value);
  });

  const fillPicker = async () => {
    const answer = await fetch("/media/", { headers: { Accept: "application/json" } });
    if (!answer.ok) {
      throw new Error("/media/ answered " + answer.status);
    }
    const current = chosen();
    const playable = (await answer.json()).filter(
      (entry) => /^(video|audio)\//.test(entry.type) || entry.name === current);
    picker.replaceChildren(...playable.map((entry) => {
      const option = document.createElement("option");
      option.value = entry.name;
      option.textContent = entry.name + " (" + (entry.size / 1048576).toFixed(1) + " MiB)";
      option.selected = entry.name === current;
      return option;
    }));
  };

  play(chosen());
  fillPicker().catch((error) => show("no file list: " + error.message, true));
})();
