// rotagate console: progressive enhancement only. Every action works
// without this file: links lead to confirm pages, forms POST.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
	// Confirm in a <dialog> instead of going to the confirm page.
	document.querySelectorAll("a[data-dialog]").forEach(function (link) {
		var dialog = document.getElementById(link.getAttribute("data-dialog"));
		if (!dialog || typeof dialog.showModal !== "function") {
			return;
		}
		link.addEventListener("click", function (ev) {
			ev.preventDefault();
			dialog.showModal();
		});
	});
	document.querySelectorAll("dialog [data-close]").forEach(function (button) {
		button.addEventListener("click", function () {
			button.closest("dialog").close();
		});
	});

	// A copy button for the secret shown once.
	document.querySelectorAll("button[data-copy]").forEach(function (button) {
		var field = document.getElementById(button.getAttribute("data-copy"));
		if (!field || !navigator.clipboard) {
			return;
		}
		button.hidden = false;
		button.addEventListener("click", function () {
			navigator.clipboard.writeText(field.value).then(function () {
				button.textContent = "Copied";
			}, function () {
				field.select();
				button.textContent = "Press Ctrl+C to copy";
			});
		});
	});
});
