#include "cli/render.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::cli {
namespace {

using ::testing::HasSubstr;

TEST(RenderTest, TableColumnsAlignWithoutTrailingSpaces) {
  EXPECT_EQ(renderTable({"NAME", "VIP", "BACKENDS"},
                        {{"web", "10.96.0.10", "3"}, {"a-longer-name", "fd00::1", ""}}),
            "NAME            VIP          BACKENDS\n"
            "web             10.96.0.10   3\n"
            "a-longer-name   fd00::1\n");
}

TEST(RenderTest, CellText) {
  EXPECT_EQ(cellText(Json("x")), "x");
  EXPECT_EQ(cellText(Json(42)), "42");
  EXPECT_EQ(cellText(Json(true)), "true");
  EXPECT_EQ(cellText(Json(nullptr)), "<none>");
  EXPECT_EQ(cellText(Json::array()), "<none>");
  EXPECT_EQ(cellText(Json::array({"a", 1})), "a,1");
  EXPECT_EQ(cellText(Json::array({Json::object({{"k", 1}})})), "[{\"k\":1}]");
}

TEST(RenderTest, ServicesView) {
  Json data = Json::parse(R"([
    {"namespace":"default","name":"web","portName":"http","vip":"10.96.0.10","port":80,
     "protocol":"TCP","algorithm":"maglev","maglevTableSize":16381,"backends":2,
     "maxConnections":null,"maxConnectionsPerBackend":10,"liveConnections":3,"svcId":1}])");
  EXPECT_EQ(renderView("services", data),
            "NAMESPACE   NAME   VIP          PORT   PROTOCOL   ALGORITHM   BACKENDS   LIVE   "
            "MAX-CONN   MAX-PER-BACKEND\n"
            "default     web    10.96.0.10   80     TCP        maglev      2          3      "
            "<none>     10\n");
}

TEST(RenderTest, GenericViewUsesKeysOfFirstObjectInOrder) {
  Json data = Json::parse(R"([{"name":"mesh_services","maxEntries":65536,"type":"hash"},
                              {"name":"mesh_slots","maxEntries":1,"type":"hash"}])");
  EXPECT_EQ(renderView("maps", data),
            "NAME            MAX-ENTRIES   TYPE\n"
            "mesh_services   65536         hash\n"
            "mesh_slots      1             hash\n");
}

TEST(RenderTest, KeyValues) {
  Json data = Json::parse(R"({"instance":"default","ready":true,
                              "reconcile":{"ok":3,"lastSeconds":0.5}})");
  EXPECT_EQ(renderKeyValues(data),
            "instance: default\n"
            "ready:    true\n"
            "reconcile:\n"
            "  ok:          3\n"
            "  lastSeconds: 0.5\n");
}

TEST(RenderTest, YamlQuotesStringsThatWouldChangeType) {
  Json data = Json::parse(R"({"name":"web","port":80,"version":"1.0","flag":"true",
                              "empty":"","ok":false,"list":["a","80"]})");
  const std::string y = renderYaml(data);
  EXPECT_THAT(y, HasSubstr("name: web\n"));
  EXPECT_THAT(y, HasSubstr("port: 80\n"));
  EXPECT_THAT(y, HasSubstr("version: \"1.0\"\n"));
  EXPECT_THAT(y, HasSubstr("flag: \"true\"\n"));
  EXPECT_THAT(y, HasSubstr("empty: \"\"\n"));
  EXPECT_THAT(y, HasSubstr("ok: false\n"));
  EXPECT_THAT(y, HasSubstr("- \"80\"\n"));
}

}  // namespace
}  // namespace meshd::cli
