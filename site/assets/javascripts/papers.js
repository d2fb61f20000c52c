// Sorting and filtering for the site's tables. Material for MkDocs styles tables but neither sorts
// nor filters them: tablesort (shipped in assets/vendor) sorts every table of an article, and an
// input with data-filter-table="ID" hides the rows of table ID that do not contain its text.
document$.subscribe(function () {
  document.querySelectorAll("article table:not([class])").forEach(function (table) {
    if (!table.dataset.sortable) {
      table.dataset.sortable = "yes";
      new Tablesort(table);
    }
  });
  document.querySelectorAll("input[data-filter-table]").forEach(function (input) {
    var table = document.getElementById(input.dataset.filterTable);
    if (!table || input.dataset.bound) return;
    input.dataset.bound = "yes";
    var count = document.getElementById(input.dataset.filterTable + "-count");
    function apply() {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      table.querySelectorAll("tbody tr").forEach(function (row) {
        var text = row.textContent.toLowerCase();
        var keep = words.every(function (word) { return text.indexOf(word) !== -1; });
        row.hidden = !keep;
        if (keep) shown += 1;
      });
      if (count) count.textContent = shown + " shown";
    }
    input.addEventListener("input", apply);
    apply();
  });
});
